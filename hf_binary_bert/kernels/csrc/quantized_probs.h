// Training kernels of the attention probabilities' quantizer (attention.py `_QuantizedProbsValue`): the elementwise
// passes of BiT's / LSQ's unsigned quantizer Â = α·round(clip(A/α, 0, Q_p)) (Esser et al. 2020; Liu et al. 2022,
// Â ∈ {0, α} at 1 bit) with its dropout, forward and backward, each as one pass over the [B, H, T, T] maps instead
// of the eight to ten passes (and their temporaries) of the PyTorch composition (kernels/reference.py
// `quantized_probs_*`, the twins these are tested against). Same float32 operations in the same order as the
// PyTorch composition, so the values are equal bit for bit; only ∂/∂α's sum is accumulated differently (float64
// here over float partial sums of fixed 16-lane blocks: the same result for any thread count and instruction set).
//
//   forward:   u = A / α, c = round_half_even(min(max(u, 0), Q_p)), Â = (c·α)·(kept ? 1/(1 − p) : 0)
//              codes = kept ? c : 0 (uint8)                      [without dropout: kept = true, no multiplication]
//   weights:   Â again from the codes: (code·α)·1/(1 − p)           (the backward pass's left operand of Âᵀ·∂O)
//   backward:  g = ∂Â (+ ∂Â from a second use), g' = (kept ? 1/(1 − p) : 0)·g,
//              ∂A = g'·1[u inside [0, Q_p]], ∂α = Σ g'·(round(clip(u)) − u·1[inside])
//
// The rounding is (v + 2²³) − 2²³, exact round-half-to-even for 0 ≤ v < 2²³ (v ≤ Q_p ≤ 255 here), so the loops
// vectorize without SSE4.1's roundps. Compiled with -ffp-contract=off like the rest (no fused multiply-adds).

constexpr int64_t kProbsChunk = 1 << 15;  // elements per chunk (per thread work item and per partial sum of ∂α)

// Elementwise training kernels: cloned for AVX-512 / AVX2 on x86-64 (chosen at load time by the CPU); the loops are
// branch-free so that every clone vectorizes (-fno-trapping-math). IEEE operations only: every clone gives the same
// bits. (Linux: the clones are resolved by ifunc, which macOS lacks.)
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && !defined(HF_BITGEMM_NO_CLONES)
#define HF_ELEMENTWISE __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define HF_ELEMENTWISE
#endif

// Sums of float products in 16 lanes (lane = index mod 16, in order) over blocks of kLaneBlock elements, each
// block's lanes added to a float64 total: the same result on every instruction set and thread count; each float
// partial sum has at most kLaneBlock / 16 terms.
constexpr int kLanes = 16;
constexpr int64_t kLaneBlock = 1024;

inline float probs_level(float u, float q_p) {
  float v = u < 0.0f ? 0.0f : u;  // clamp(u, 0, Q_p), NaN kept as torch.clamp keeps it
  v = v > q_p ? q_p : v;
  return (v + 8388608.0f) - 8388608.0f;
}

template <bool kDropout>
HF_ELEMENTWISE void quantized_probs_forward_range(const float* __restrict probs, const uint8_t* __restrict kept,
                                                  int64_t lo, int64_t hi, float alpha, float q_p, float keep_scale,
                                                  uint8_t* __restrict codes, float* __restrict weights) {
  for (int64_t i = lo; i < hi; ++i) {
    const float level = probs_level(probs[i] / alpha, q_p);
    const uint8_t code = (uint8_t)(int)level;  // 0 … Q_p (NaN: unspecified, as in the uint8 cast of torch)
    if (kDropout) {
      weights[i] = (level * alpha) * ((float)kept[i] * keep_scale);  // noise = 1[kept]·1/(1 − p), as mask_dropout
      codes[i] = (uint8_t)(code * kept[i]);
    } else {
      weights[i] = level * alpha;
      codes[i] = code;
    }
  }
}

// codes [n] uint8, weights [n] float32 from probs [n]; kept [n] (bool bytes) or nullptr (no dropout).
void quantized_probs_forward(const float* probs, const uint8_t* kept, int64_t n, float alpha, float q_p,
                             float keep_scale, uint8_t* codes, float* weights, int nthreads) {
  const int64_t chunks = (n + kProbsChunk - 1) / kProbsChunk;
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1 && chunks > 1)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t lo = c * kProbsChunk, hi = std::min(n, lo + kProbsChunk);
    if (kept)
      quantized_probs_forward_range<true>(probs, kept, lo, hi, alpha, q_p, keep_scale, codes, weights);
    else
      quantized_probs_forward_range<false>(probs, kept, lo, hi, alpha, q_p, keep_scale, codes, weights);
  }
}

template <bool kScale>
HF_ELEMENTWISE void quantized_probs_weights_range(const uint8_t* __restrict codes, int64_t lo, int64_t hi,
                                                  float alpha, float keep_scale, float* __restrict weights) {
  for (int64_t i = lo; i < hi; ++i) weights[i] = kScale ? ((float)codes[i] * alpha) * keep_scale : (float)codes[i] * alpha;
}

// weights [n] float32 = (code·α)·keep_scale (with_scale) or code·α.
void quantized_probs_weights(const uint8_t* codes, int64_t n, float alpha, float keep_scale, bool with_scale,
                             float* weights, int nthreads) {
  const int64_t chunks = (n + kProbsChunk - 1) / kProbsChunk;
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1 && chunks > 1)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t lo = c * kProbsChunk, hi = std::min(n, lo + kProbsChunk);
    if (with_scale)
      quantized_probs_weights_range<true>(codes, lo, hi, alpha, keep_scale, weights);
    else
      quantized_probs_weights_range<false>(codes, lo, hi, alpha, keep_scale, weights);
  }
}

// One element of the backward pass: writes ∂A = g'·1[inside] and returns g'·(round(clip(u)) − u·1[inside]).
template <bool kGrad2, bool kDropout>
inline float quantized_probs_backward_one(const float* grad, const float* __restrict grad2,
                                         const float* __restrict probs, const uint8_t* __restrict kept, int64_t i,
                                         float alpha, float q_p, float keep_scale, float* grad_probs) {
  float g = kGrad2 ? grad[i] + grad2[i] : grad[i];
  if (kDropout) g = ((float)kept[i] * keep_scale) * g;  // 1[kept]·1/(1 − p) first, as dropout_backward
  const float u = probs[i] / alpha;
  float clipped = u < 0.0f ? 0.0f : u;
  clipped = clipped > q_p ? q_p : clipped;
  const float inside = clipped == u ? 1.0f : 0.0f;
  grad_probs[i] = g * inside;
  return g * (((clipped + 8388608.0f) - 8388608.0f) - inside * clipped);
}

// One block (≤ kLaneBlock elements) of the backward pass; returns its Σ g'·term in 16 float lanes, added in double.
// kInPlace: ∂A overwrites grad (grad_probs == grad; the same pointer, so the loops still vectorize).
template <bool kGrad2, bool kDropout, bool kInPlace>
HF_ELEMENTWISE double quantized_probs_backward_block(const float* grad, const float* __restrict grad2,
                                                     const float* __restrict probs, const uint8_t* __restrict kept,
                                                     int64_t lo, int64_t hi, float alpha, float q_p,
                                                     float keep_scale, float* out) {
  float* grad_probs = kInPlace ? const_cast<float*>(grad) : out;
  float lanes[kLanes] = {};
  int64_t i = lo;
  for (; i + kLanes <= hi; i += kLanes)
    for (int j = 0; j < kLanes; ++j)
      lanes[j] += quantized_probs_backward_one<kGrad2, kDropout>(grad, grad2, probs, kept, i + j, alpha, q_p,
                                                                 keep_scale, grad_probs);
  for (int j = 0; i + j < hi; ++j)  // the tail, in lanes 0, 1, …
    lanes[j] += quantized_probs_backward_one<kGrad2, kDropout>(grad, grad2, probs, kept, i + j, alpha, q_p,
                                                               keep_scale, grad_probs);
  double sum = 0.0;
  for (int j = 0; j < kLanes; ++j) sum += (double)lanes[j];
  return sum;
}

// grad_probs [n] (may be grad itself) from grad [n], grad2 [n] or nullptr, probs [n], kept [n] or nullptr; returns
// ∂α = Σ g'·(round(clip(u)) − u·1[inside]).
double quantized_probs_backward(const float* grad, const float* grad2, const float* probs, const uint8_t* kept,
                                int64_t n, float alpha, float q_p, float keep_scale, float* grad_probs,
                                int nthreads) {
  const int64_t blocks = (n + kLaneBlock - 1) / kLaneBlock;
  std::vector<double> partial(blocks, 0.0);
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1 && n > kProbsChunk)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t lo = b * kLaneBlock, hi = std::min(n, lo + kLaneBlock);
    const int which = (grad2 ? 4 : 0) | (kept ? 2 : 0) | (grad_probs == grad ? 1 : 0);
    double (*block)(const float*, const float*, const float*, const uint8_t*, int64_t, int64_t, float, float, float,
                    float*) = nullptr;
    switch (which) {
      case 0: block = quantized_probs_backward_block<false, false, false>; break;
      case 1: block = quantized_probs_backward_block<false, false, true>; break;
      case 2: block = quantized_probs_backward_block<false, true, false>; break;
      case 3: block = quantized_probs_backward_block<false, true, true>; break;
      case 4: block = quantized_probs_backward_block<true, false, false>; break;
      case 5: block = quantized_probs_backward_block<true, false, true>; break;
      case 6: block = quantized_probs_backward_block<true, true, false>; break;
      default: block = quantized_probs_backward_block<true, true, true>; break;
    }
    partial[b] = block(grad, grad2, probs, kept, lo, hi, alpha, q_p, keep_scale, grad_probs);
  }
  return std::accumulate(partial.begin(), partial.end(), 0.0);
}
