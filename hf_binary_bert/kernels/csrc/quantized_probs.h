// Training kernels of the attention probabilities' quantizer (attention.py `_QuantizedProbsValue`): the elementwise
// passes of BiT's / LSQ's unsigned quantizer Â = α·round(clip(A/α, 0, Q_p)) (Esser et al. 2020; Liu et al. 2022,
// Â ∈ {0, α} at 1 bit) with its dropout, forward and backward, each as one pass over the [B, H, T, T] maps instead
// of the eight to ten passes (and their temporaries) of the PyTorch composition (kernels/reference.py
// `quantized_probs_*`, the twins these are tested against). Same float32 operations in the same order as the
// PyTorch composition, so the values are equal bit for bit; only ∂/∂α's sum is accumulated differently (float64
// here, per fixed chunk, chunks added in order: the same result for any thread count).
//
//   forward:   u = A / α, c = round_half_even(min(max(u, 0), Q_p)), Â = (c·α)·(kept ? 1/(1 − p) : 0)
//              codes = kept ? c : 0 (uint8)                      [without dropout: kept = true, no multiplication]
//   weights:   Â again from the codes: (code·α)·1/(1 − p)           (the backward pass's left operand of Âᵀ·∂O)
//   backward:  g = ∂Â (+ ∂Â from a second use), g' = (kept ? 1/(1 − p) : 0)·g,
//              ∂A = g'·1[u inside [0, Q_p]], ∂α = Σ g'·(round(clip(u)) − u·1[inside])
//
// The rounding is (v + 2²³) − 2²³, exact round-half-to-even for 0 ≤ v < 2²³ (v ≤ Q_p ≤ 255 here), so the loops
// vectorize without SSE4.1's roundps. Compiled with -ffp-contract=off like the rest (no fused multiply-adds).

constexpr int64_t kProbsChunk = 1 << 15;  // elements per chunk (and per partial sum of ∂α)

inline float probs_level(float u, float q_p) {
  float v = u < 0.0f ? 0.0f : u;  // clamp(u, 0, Q_p), NaN kept as torch.clamp keeps it
  v = v > q_p ? q_p : v;
  return (v + 8388608.0f) - 8388608.0f;
}

// codes [n] uint8, weights [n] float32 from probs [n]; kept [n] (bool bytes) or nullptr (no dropout).
void quantized_probs_forward(const float* probs, const uint8_t* kept, int64_t n, float alpha, float q_p,
                             float keep_scale, uint8_t* codes, float* weights, int nthreads) {
  const int64_t chunks = (n + kProbsChunk - 1) / kProbsChunk;
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1 && chunks > 1)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t lo = c * kProbsChunk, hi = std::min(n, lo + kProbsChunk);
    if (kept) {
#pragma omp simd
      for (int64_t i = lo; i < hi; ++i) {
        const float level = probs_level(probs[i] / alpha, q_p);
        const bool k = kept[i] != 0;
        weights[i] = (level * alpha) * (k ? keep_scale : 0.0f);
        codes[i] = k ? (uint8_t)(int)(level == level ? level : 0.0f) : 0;
      }
    } else {
#pragma omp simd
      for (int64_t i = lo; i < hi; ++i) {
        const float level = probs_level(probs[i] / alpha, q_p);
        weights[i] = level * alpha;
        codes[i] = (uint8_t)(int)(level == level ? level : 0.0f);
      }
    }
  }
}

// weights [n] float32 = (code·α)·keep_scale (with_scale) or code·α.
void quantized_probs_weights(const uint8_t* codes, int64_t n, float alpha, float keep_scale, bool with_scale,
                             float* weights, int nthreads) {
  const int64_t chunks = (n + kProbsChunk - 1) / kProbsChunk;
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1 && chunks > 1)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t lo = c * kProbsChunk, hi = std::min(n, lo + kProbsChunk);
    if (with_scale) {
#pragma omp simd
      for (int64_t i = lo; i < hi; ++i) weights[i] = ((float)codes[i] * alpha) * keep_scale;
    } else {
#pragma omp simd
      for (int64_t i = lo; i < hi; ++i) weights[i] = (float)codes[i] * alpha;
    }
  }
}

// grad_probs [n] (may be grad itself) from grad [n], grad2 [n] or nullptr, probs [n], kept [n] or nullptr; returns
// ∂α = Σ g'·(round(clip(u)) − u·1[inside]).
double quantized_probs_backward(const float* grad, const float* grad2, const float* probs, const uint8_t* kept,
                                int64_t n, float alpha, float q_p, float keep_scale, float* grad_probs,
                                int nthreads) {
  const int64_t chunks = (n + kProbsChunk - 1) / kProbsChunk;
  std::vector<double> partial(chunks, 0.0);
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1 && chunks > 1)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t lo = c * kProbsChunk, hi = std::min(n, lo + kProbsChunk);
    double sum = 0.0;
#pragma omp simd reduction(+ : sum)
    for (int64_t i = lo; i < hi; ++i) {
      float g = grad2 ? grad[i] + grad2[i] : grad[i];
      if (kept) g = (kept[i] != 0 ? keep_scale : 0.0f) * g;
      const float u = probs[i] / alpha;
      float clipped = u < 0.0f ? 0.0f : u;
      clipped = clipped > q_p ? q_p : clipped;
      const float inside = clipped == u ? 1.0f : 0.0f;
      const float term = ((clipped + 8388608.0f) - 8388608.0f) - inside * clipped;
      grad_probs[i] = g * inside;
      sum += (double)g * (double)term;
    }
    partial[c] = sum;
  }
  return std::accumulate(partial.begin(), partial.end(), 0.0);
}
