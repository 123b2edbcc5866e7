// The native encoder runtime: every layer of a packed binarized BERT encoder in one call
// (`hf_binary_bert.runtime.EncoderRuntime` builds the plan and calls `encoder_forward`).
//
// Included once by bitgemm.cpp, inside its anonymous namespace (one translation unit: the runtime calls the fused
// Linears `run_w1a1` / `run_w1a8` directly, with no Python between them).
//
// Data: the hidden states of the batch's real tokens only, packed row after row (padding removed, as
// FasterTransformer's "remove padding"): x float32 [M, H], sequence b = rows cu[b] … cu[b+1]−1. Each layer computes,
// as transformers' BertLayer does (post-LayerNorm BERT):
//   q, k, v = Linear_q(x), Linear_k(x), Linear_v(x)                       (binarized, input quantizer fused)
//   ctx     = attention(q, k, v) per sequence and head                      (quantized operands, see below; for a
//                                                                              W1A1 Linear_ao packed by each head
//                                                                              into its input bits)
//   x1      = LayerNorm(Linear_ao(ctx) + x)
//   x       = LayerNorm(Linear_o(act(Linear_i(x1))) + x1)                   (act: exact-erf GELU or ReLU; a GELU
//                                                                              before a 1-bit Linear_o is folded
//                                                                              into its input thresholds)
// Attention operands are quantized by the attention module's quantizers (QuantSpec): 1-bit signed Q and K give the
// scores by XNOR-popcount, 1-bit probabilities and 1-bit signed V give A·V by AND-popcount; other bit widths run a
// small float GEMM on the integer levels (exact: |Σ| < 2²⁴), float attention (W1A32) on the values.
//
// The plan is a flat int64 array, one block of kLayerWords per layer (offsets below; floats stored as their bits),
// written by hf_binary_bert/runtime.py (`_layer_words`). It holds raw pointers into the module tree's tensors, which
// the Python plan keeps alive and rebuilds when one of them changes.

// ---- plan layout (mirrored in hf_binary_bert/runtime.py) ----
constexpr int kLinWords = 17;  // one binarized Linear
// L_NIB: the path's own weight layout, made once by the plan: on avx2 a W1A1 Linear's nibble_layout (the table
// GEMM's weights), on avx512_amx a W1 × u8 Linear's amx_layout (amx_gemm.h); else 0
enum LinField { L_KIND, L_K, L_N, L_W, L_WSUM, L_ALPHA, L_GAMMA, L_BIAS, L_SHIFT, L_STEP, L_THR, L_MODE, L_SCALE, L_QN,
                L_QP, L_DYNAMIC, L_NIB };
constexpr int kQuantWords = 6;  // one attention-operand quantizer
enum QuantField { Q_KIND, Q_SHIFT, Q_STEP, Q_QN, Q_QP, Q_UNUSED };
enum QuantKind { QK_FLOAT = 0, QK_SIGN = 1, QK_SIGN_UNSIGNED = 2, QK_ELASTIC_SIGN = 3, QK_LEVELS = 4 };
// F_HEAD_DIM: the value (and context) head size D; F_QK_HEAD_DIM: the query/key head size D_qk ≤ D (smaller in a
// layer whose query/key dimensions were pruned: Q and K rows are heads·D_qk wide, V and the context heads·D).
enum LayerField { F_HIDDEN, F_HEADS, F_HEAD_DIM, F_INTER, F_ACT, F_ATTN, F_SCALING, F_BI_SCALE, F_LN1_W, F_LN1_B,
                  F_LN1_EPS, F_LN2_W, F_LN2_B, F_LN2_EPS, F_QK_HEAD_DIM, F_QUANT };
constexpr int F_LINEAR = F_QUANT + 4 * kQuantWords;  // q, k, v, attention output, intermediate, output
constexpr int kLayerWords = F_LINEAR + 6 * kLinWords;
// ACT_GELU_FOLDED: GELU folded into the output Linear's 1-bit input quantizer (its plan words carry mode SIGNED_GELU
// and the thresholds), so no activation pass runs.
enum Act { ACT_GELU = 0, ACT_RELU = 1, ACT_GELU_FOLDED = 2 };
enum Attn { ATTN_SOFTMAX = 0, ATTN_BI = 1 };

inline float as_float(int64_t v) {
  const uint32_t bits = (uint32_t)(uint64_t)v;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

template <class T>
inline T* as_ptr(int64_t v) {
  return reinterpret_cast<T*>((uintptr_t)v);
}

// One binarized Linear of the plan on x [M, K] → out [M, N]; a W1A1 Linear with `pack` writes its output as the
// bits of the next quantizer instead (run_w1a1's PackTarget; `out` is then not written).
// A W1 × u8 Linear's lut6 index: its weights are the "nib" kernel layout Python made (repack), which carries the
// index after the nib words.
inline const uint8_t* lut_of(const int64_t* L) {
  return reinterpret_cast<const uint8_t*>(as_ptr<const uint64_t>(L[L_W]) + lut6_offset_words(L[L_N], L[L_K]));
}

void run_linear(const int64_t* L, const float* x, int64_t M, float* out, int nthreads,
                const PackTarget* pack = nullptr) {
  const int64_t K = L[L_K], N = L[L_N];
  if (L[L_KIND] == 0)
    run_w1a1(x, M, K, K, as_ptr<const float>(L[L_SHIFT]), as_float(L[L_STEP]), as_float(L[L_THR]), (int)L[L_MODE],
             as_ptr<const uint64_t>(L[L_W]), N, as_ptr<const float>(L[L_ALPHA]), as_ptr<const float>(L[L_GAMMA]),
             as_float(L[L_SCALE]), as_ptr<const float>(L[L_BIAS]), out, N, nthreads, pack,
             as_ptr<const uint8_t>(L[L_NIB]));
  else
    run_w1a8(x, M, K, K, as_ptr<const float>(L[L_SHIFT]), as_float(L[L_STEP]), (int)L[L_QN], (int)L[L_QP],
             L[L_DYNAMIC] != 0, as_ptr<const uint64_t>(L[L_W]), N, as_ptr<const int32_t>(L[L_WSUM]),
             as_ptr<const float>(L[L_ALPHA]), as_ptr<const float>(L[L_GAMMA]), as_ptr<const float>(L[L_BIAS]), out, N,
             nthreads, false, lut_of(L), as_ptr<const uint64_t>(L[L_NIB]));
}

// Whether two W1 × u8 Linears quantize the same input identically (the same shift tensor, step, levels and dynamic
// flag): then one quantization of x serves both (run_w1a8_shared).
bool same_w1a8_input(const int64_t* A, const int64_t* B) {
  return A[L_KIND] == 1 && B[L_KIND] == 1 && A[L_K] == B[L_K] && A[L_SHIFT] == B[L_SHIFT] && A[L_STEP] == B[L_STEP] &&
         A[L_QN] == B[L_QN] && A[L_QP] == B[L_QP] && A[L_DYNAMIC] == B[L_DYNAMIC];
}

// ------------------------------------------------------------------------------------------------------------------
// Vector math: exp (Cephes' expf: range reduction by ln 2 in two parts, degree-6 polynomial; ≈ 1 ulp on
// [−87, 88]), erf as PyTorch's CPU GELU computes it (Abramowitz & Stegun 7.1.26 with that exp), and a small
// float GEMM. AVX2 + FMA versions and portable ones.

#if defined(__x86_64__) || defined(_M_X64)
__attribute__((target("avx2,fma"))) inline __m256 exp_avx2(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.33654f)), _mm256_set1_ps(88.3762626647949f));
  __m256 fx = _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f));
  fx = _mm256_floor_ps(fx);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
  __m256 y = _mm256_set1_ps(1.9875691500E-4f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507E-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073E-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894E-2f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459E-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201E-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(fx), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

__attribute__((target("avx2,fma"))) inline __m256 erf_avx2(__m256 x) {
  const __m256 sign = _mm256_and_ps(_mm256_set1_ps(-0.0f), x), a = _mm256_xor_ps(sign, x), one = _mm256_set1_ps(1.0f);
  const __m256 t = _mm256_div_ps(one, _mm256_fmadd_ps(_mm256_set1_ps(0.3275911f), a, one));
  __m256 r = _mm256_fmadd_ps(_mm256_set1_ps(1.061405429f), t, _mm256_set1_ps(-1.453152027f));
  r = _mm256_fmadd_ps(r, t, _mm256_set1_ps(1.421413741f));
  r = _mm256_fmadd_ps(r, t, _mm256_set1_ps(-0.284496736f));
  r = _mm256_fmadd_ps(r, t, _mm256_set1_ps(0.254829592f));
  const __m256 e = exp_avx2(_mm256_xor_ps(_mm256_set1_ps(-0.0f), _mm256_mul_ps(x, x)));
  const __m256 v = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_xor_ps(_mm256_set1_ps(-0.0f), e), t), r, one);
  return _mm256_xor_ps(sign, v);
}
#endif

inline float erf_scalar(float x) {  // the same formula, scalar
  const float a = std::fabs(x), t = 1.0f / (0.3275911f * a + 1.0f);
  const float r = (((1.061405429f * t - 1.453152027f) * t + 1.421413741f) * t - 0.284496736f) * t + 0.254829592f;
  return std::copysign(1.0f - r * t * std::exp(-x * x), x);
}

inline bool use_avx2() { return kFeatures.avx2 && g_isa != PORTABLE; }

#if defined(__x86_64__) || defined(_M_X64)
__attribute__((target("avx2,fma"))) void gelu_avx2(float* x, int64_t n) {
  int64_t i = 0;
  const __m256 half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f), alpha = _mm256_set1_ps(0.70710678118654752f);
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_mul_ps(v, half), _mm256_add_ps(one, erf_avx2(_mm256_mul_ps(v, alpha)))));
  }
  for (; i < n; ++i) x[i] = x[i] * 0.5f * (1.0f + erf_scalar(x[i] * 0.70710678118654752f));
}

// AVX-512 twins of exp_avx2 / erf_avx2 / gelu_avx2: the same IEEE operations per lane (the same FMAs; floor as
// roundscale toward −∞), so every element equals the AVX2 result bit for bit, 16 at a time.
__attribute__((target("avx512f,avx2,fma"))) inline __m512 exp_avx512(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.33654f)), _mm512_set1_ps(88.3762626647949f));
  __m512 fx = _mm512_fmadd_ps(x, _mm512_set1_ps(1.44269504088896341f), _mm512_set1_ps(0.5f));
  fx = _mm512_roundscale_ps(fx, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  x = _mm512_fnmadd_ps(fx, _mm512_set1_ps(0.693359375f), x);
  x = _mm512_fnmadd_ps(fx, _mm512_set1_ps(-2.12194440e-4f), x);
  __m512 y = _mm512_set1_ps(1.9875691500E-4f);
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(1.3981999507E-3f));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(8.3334519073E-3f));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(4.1665795894E-2f));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(1.6666665459E-1f));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(5.0000001201E-1f));
  y = _mm512_fmadd_ps(y, _mm512_mul_ps(x, x), _mm512_add_ps(x, _mm512_set1_ps(1.0f)));
  const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvttps_epi32(fx), _mm512_set1_epi32(127)), 23);
  return _mm512_mul_ps(y, _mm512_castsi512_ps(e));
}

__attribute__((target("avx512f,avx512dq,avx2,fma"))) inline __m512 erf_avx512(__m512 x) {
  const __m512 sign = _mm512_and_ps(_mm512_set1_ps(-0.0f), x), a = _mm512_xor_ps(sign, x), one = _mm512_set1_ps(1.0f);
  const __m512 t = _mm512_div_ps(one, _mm512_fmadd_ps(_mm512_set1_ps(0.3275911f), a, one));
  __m512 r = _mm512_fmadd_ps(_mm512_set1_ps(1.061405429f), t, _mm512_set1_ps(-1.453152027f));
  r = _mm512_fmadd_ps(r, t, _mm512_set1_ps(1.421413741f));
  r = _mm512_fmadd_ps(r, t, _mm512_set1_ps(-0.284496736f));
  r = _mm512_fmadd_ps(r, t, _mm512_set1_ps(0.254829592f));
  const __m512 e = exp_avx512(_mm512_xor_ps(_mm512_set1_ps(-0.0f), _mm512_mul_ps(x, x)));
  const __m512 v = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_xor_ps(_mm512_set1_ps(-0.0f), e), t), r, one);
  return _mm512_xor_ps(sign, v);
}

__attribute__((target("avx512f,avx512dq,avx2,fma"))) void gelu_avx512(float* x, int64_t n) {
  int64_t i = 0;
  const __m512 half = _mm512_set1_ps(0.5f), one = _mm512_set1_ps(1.0f), alpha = _mm512_set1_ps(0.70710678118654752f);
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_loadu_ps(x + i);
    _mm512_storeu_ps(x + i, _mm512_mul_ps(_mm512_mul_ps(v, half), _mm512_add_ps(one, erf_avx512(_mm512_mul_ps(v, alpha)))));
  }
  gelu_avx2(x + i, n - i);
}

inline bool use_avx512() { return kFeatures.avx512bw && g_isa >= AVX512 && g_isa != NEON; }
#endif

void activation(int act, float* x, int64_t n, int nthreads) {
  const int64_t chunk = 4096, chunks = (n + chunk - 1) / chunk;
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1 && chunks > 1)
  for (int64_t c = 0; c < chunks; ++c) {
    float* p = x + c * chunk;
    const int64_t len = std::min(chunk, n - c * chunk);
    if (act == ACT_RELU) {
      for (int64_t i = 0; i < len; ++i) p[i] = p[i] > 0.0f ? p[i] : 0.0f;
#if defined(__x86_64__) || defined(_M_X64)
    } else if (use_avx512()) {
      gelu_avx512(p, len);
    } else if (use_avx2()) {
      gelu_avx2(p, len);
#endif
    } else {
      for (int64_t i = 0; i < len; ++i) p[i] = p[i] * 0.5f * (1.0f + erf_scalar(p[i] * 0.70710678118654752f));
    }
  }
}

// x[m] = LayerNorm(x[m] + r[m]) over H features: y = (v·rstd − mean·rstd)·w + b, rstd = 1/√(var + eps), var biased
// (the order of PyTorch's CPU LayerNorm kernel). Statistics: 8 float partial sums per row, added in double.
// R rows at a time: each row's sums run in exactly the one-row order (the same values), but the R dependency chains
// of the partial sums (one add per 8 features, each waiting for the last) overlap instead of running one after another.
#if defined(__x86_64__) || defined(_M_X64)
template <int R>
__attribute__((target("avx2,fma"))) void add_layer_norm_rows_avx2(float* x, const float* res, int64_t H, const float* w,
                                                                 const float* b, float eps) {
  __m256 acc[R];
  double sum[R], sq[R];
  float mean[R], rstd[R], shift[R];
  alignas(32) float lanes[8];
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  int64_t h = 0;
  for (; h + 8 <= H; h += 8)
    for (int r = 0; r < R; ++r) {
      const __m256 v = _mm256_add_ps(_mm256_loadu_ps(x + r * H + h), _mm256_loadu_ps(res + r * H + h));
      _mm256_storeu_ps(x + r * H + h, v);
      acc[r] = _mm256_add_ps(acc[r], v);
    }
  const int64_t tail = h;
  for (int r = 0; r < R; ++r) {
    float* row = x + r * H;
    _mm256_store_ps(lanes, acc[r]);
    sum[r] = 0.0;
    for (int i = 0; i < 8; ++i) sum[r] += lanes[i];
    for (int64_t t = tail; t < H; ++t) sum[r] += (row[t] = row[t] + res[r * H + t]);
    mean[r] = (float)(sum[r] / (double)H);
    acc[r] = _mm256_setzero_ps();
  }
  for (h = 0; h + 8 <= H; h += 8)
    for (int r = 0; r < R; ++r) {
      const __m256 d = _mm256_sub_ps(_mm256_loadu_ps(x + r * H + h), _mm256_set1_ps(mean[r]));
      acc[r] = _mm256_fmadd_ps(d, d, acc[r]);
    }
  for (int r = 0; r < R; ++r) {
    const float* row = x + r * H;
    _mm256_store_ps(lanes, acc[r]);
    sq[r] = 0.0;
    for (int i = 0; i < 8; ++i) sq[r] += lanes[i];
    for (int64_t t = tail; t < H; ++t) sq[r] += (double)(row[t] - mean[r]) * (row[t] - mean[r]);
    rstd[r] = (float)(1.0 / std::sqrt(sq[r] / (double)H + (double)eps));
    shift[r] = -mean[r] * rstd[r];
  }
  for (int r = 0; r < R; ++r) {
    float* row = x + r * H;
    const __m256 vr = _mm256_set1_ps(rstd[r]), vs = _mm256_set1_ps(shift[r]);
    for (h = 0; h + 8 <= H; h += 8) {
      const __m256 y = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(row + h), vr), vs);
      _mm256_storeu_ps(row + h, _mm256_add_ps(_mm256_mul_ps(y, _mm256_loadu_ps(w + h)), _mm256_loadu_ps(b + h)));
    }
    for (; h < H; ++h) row[h] = (row[h] * rstd[r] + shift[r]) * w[h] + b[h];
  }
}
#endif

void add_layer_norm_row(float* row, const float* res, int64_t H, const float* w, const float* b, float eps) {
  double sum = 0.0;
  for (int64_t h = 0; h < H; ++h) sum += (row[h] = row[h] + res[h]);
  const float mean = (float)(sum / (double)H);
  double sq = 0.0;
  for (int64_t h = 0; h < H; ++h) sq += (double)(row[h] - mean) * (row[h] - mean);
  const float rstd = (float)(1.0 / std::sqrt(sq / (double)H + (double)eps)), shift = -mean * rstd;
  for (int64_t h = 0; h < H; ++h) row[h] = (row[h] * rstd + shift) * w[h] + b[h];
}

void add_layer_norm(float* x, const float* r, int64_t M, int64_t H, const float* w, const float* b, float eps,
                    int nthreads) {
#if defined(__x86_64__) || defined(_M_X64)
  if (use_avx2()) {
    constexpr int64_t R = 4;  // rows per call (the last call takes the rest)
    const int64_t groups = (M + R - 1) / R;
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1 && M > 16)
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t m = g * R, n = std::min(R, M - m);
      float* xm = x + m * H;
      const float* rm = r + m * H;
      switch (n) {
        case 4: add_layer_norm_rows_avx2<4>(xm, rm, H, w, b, eps); break;
        case 3: add_layer_norm_rows_avx2<3>(xm, rm, H, w, b, eps); break;
        case 2: add_layer_norm_rows_avx2<2>(xm, rm, H, w, b, eps); break;
        default: add_layer_norm_rows_avx2<1>(xm, rm, H, w, b, eps);
      }
    }
    return;
  }
#endif
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1 && M > 16)
  for (int64_t m = 0; m < M; ++m) add_layer_norm_row(x + m * H, r + m * H, H, w, b, eps);
}

// C[M×N] = A[M×K] · B[K×N], row-major (lda, ldb, ldc); M a multiple of 4, N of 16 (callers pad with zeros).
#if defined(__x86_64__) || defined(_M_X64)
__attribute__((target("avx2,fma"))) void sgemm_avx2(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
                                                     const float* B, int64_t ldb, float* C, int64_t ldc) {
  for (int64_t m = 0; m < M; m += 4)
    for (int64_t n = 0; n < N; n += 16) {
      __m256 acc[4][2];
      for (int i = 0; i < 4; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
      for (int64_t k = 0; k < K; ++k) {
        const __m256 b0 = _mm256_loadu_ps(B + k * ldb + n), b1 = _mm256_loadu_ps(B + k * ldb + n + 8);
        for (int i = 0; i < 4; ++i) {
          const __m256 a = _mm256_broadcast_ss(A + (m + i) * lda + k);
          acc[i][0] = _mm256_fmadd_ps(a, b0, acc[i][0]);
          acc[i][1] = _mm256_fmadd_ps(a, b1, acc[i][1]);
        }
      }
      for (int i = 0; i < 4; ++i) {
        _mm256_storeu_ps(C + (m + i) * ldc + n, acc[i][0]);
        _mm256_storeu_ps(C + (m + i) * ldc + n + 8, acc[i][1]);
      }
    }
}
#endif

#if defined(__x86_64__) || defined(_M_X64)
// The same per-output sums as sgemm_avx2 (one FMA per k, k in order, from zero), 16 columns per vector: 4 rows × 32
// columns per block (8 accumulators), then a 4 × 16 block where N is an odd multiple of 16.
__attribute__((target("avx512f,fma"))) void sgemm_avx512(int64_t M, int64_t N, int64_t K, const float* A,
                                                          int64_t lda, const float* B, int64_t ldb, float* C,
                                                          int64_t ldc) {
  for (int64_t m = 0; m < M; m += 4) {
    int64_t n = 0;
    for (; n + 32 <= N; n += 32) {
      __m512 acc[4][2];
      for (int i = 0; i < 4; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
      for (int64_t k = 0; k < K; ++k) {
        const __m512 b0 = _mm512_loadu_ps(B + k * ldb + n), b1 = _mm512_loadu_ps(B + k * ldb + n + 16);
        for (int i = 0; i < 4; ++i) {
          const __m512 a = _mm512_set1_ps(A[(m + i) * lda + k]);
          acc[i][0] = _mm512_fmadd_ps(a, b0, acc[i][0]);
          acc[i][1] = _mm512_fmadd_ps(a, b1, acc[i][1]);
        }
      }
      for (int i = 0; i < 4; ++i) {
        _mm512_storeu_ps(C + (m + i) * ldc + n, acc[i][0]);
        _mm512_storeu_ps(C + (m + i) * ldc + n + 16, acc[i][1]);
      }
    }
    if (n < N) {
      __m512 acc[4];
      for (int i = 0; i < 4; ++i) acc[i] = _mm512_setzero_ps();
      for (int64_t k = 0; k < K; ++k) {
        const __m512 b0 = _mm512_loadu_ps(B + k * ldb + n);
        for (int i = 0; i < 4; ++i) acc[i] = _mm512_fmadd_ps(_mm512_set1_ps(A[(m + i) * lda + k]), b0, acc[i]);
      }
      for (int i = 0; i < 4; ++i) _mm512_storeu_ps(C + (m + i) * ldc + n, acc[i]);
    }
  }
}
#endif

void sgemm(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb, float* C,
           int64_t ldc) {
#if defined(__x86_64__) || defined(_M_X64)
  if (use_avx512()) return sgemm_avx512(M, N, K, A, lda, B, ldb, C, ldc);
  if (use_avx2()) return sgemm_avx2(M, N, K, A, lda, B, ldb, C, ldc);
#endif
  for (int64_t m = 0; m < M; ++m) {
    float* c = C + m * ldc;
    for (int64_t n = 0; n < N; ++n) c[n] = 0.0f;
    for (int64_t k = 0; k < K; ++k) {
      const float a = A[m * lda + k];
      const float* b = B + k * ldb;
      for (int64_t n = 0; n < N; ++n) c[n] += a * b[n];
    }
  }
}

// ------------------------------------------------------------------------------------------------------------------
// Attention operand quantizers (binarization/activation.py, no-grad forward): the integer level q of x and its
// scale s (value = s·q):
//   QK_FLOAT: q = x − β, s = 1;  QK_SIGN: q = sign(x) (sign(0) = +1);  QK_SIGN_UNSIGNED: q = 1[x ≥ ½];
//   QK_ELASTIC_SIGN: q = sign((x − β)/s);  QK_LEVELS: q = round(clip((x − β)/s, Q_n, Q_p)) (half to even).
// One-bit kinds (QK_SIGN, QK_ELASTIC_SIGN; QK_SIGN_UNSIGNED and QK_LEVELS with Q_n = 0, Q_p = 1) are packed as bits
// (1 = +1, or 1 = level 1 for the unsigned ones).
struct QuantSpec {
  int kind;
  const float* shift;  // [heads·D] or null
  float step;
  float qn, qp;
  bool one_bit_signed() const { return kind == QK_SIGN || kind == QK_ELASTIC_SIGN; }
  bool one_bit_unsigned() const { return kind == QK_SIGN_UNSIGNED || (kind == QK_LEVELS && qn == 0.0f && qp == 1.0f); }
  float scale() const { return kind == QK_FLOAT || kind == QK_SIGN || kind == QK_SIGN_UNSIGNED ? 1.0f : step; }
  float level(float x, const float* sh, int64_t c) const {
    const float v = sh ? x - sh[c] : x;
    switch (kind) {
      case QK_FLOAT: return v;
      case QK_SIGN: return v >= 0.0f ? 1.0f : -1.0f;
      case QK_SIGN_UNSIGNED: return v >= 0.5f ? 1.0f : 0.0f;
      case QK_ELASTIC_SIGN: return v / step >= 0.0f ? 1.0f : -1.0f;
      default: return std::nearbyint(std::min(std::max(v / step, qn), qp));
    }
  }
};

QuantSpec quant_spec(const int64_t* w) {
  return {(int)w[Q_KIND], as_ptr<const float>(w[Q_SHIFT]), as_float(w[Q_STEP]), (float)w[Q_QN], (float)w[Q_QP]};
}

inline int64_t round_up(int64_t v, int64_t to) { return (v + to - 1) / to * to; }

// Row helpers, each in an AVX2 version (AVX = true: compiled for avx2, fma, popcnt) and a portable one.
// levels_row: out[c] = level of x[c] (c < n); bits_row: words |= bit c for 1-bit kinds (words zeroed by the caller).
#if defined(__x86_64__) || defined(_M_X64)
__attribute__((target("avx2,fma"))) int64_t levels_row_avx2(const QuantSpec& s, const float* x, const float* sh,
                                                            int64_t n, float* out) {
  int64_t c = 0;
  {
    const __m256 step = _mm256_set1_ps(s.step), lo = _mm256_set1_ps(s.qn), hi = _mm256_set1_ps(s.qp);
    const __m256 one = _mm256_set1_ps(1.0f), half = _mm256_set1_ps(0.5f), zero = _mm256_setzero_ps();
    for (; c + 8 <= n; c += 8) {
      __m256 v = _mm256_loadu_ps(x + c);
      if (sh) v = _mm256_sub_ps(v, _mm256_loadu_ps(sh + c));
      switch (s.kind) {
        case QK_FLOAT: break;
        case QK_SIGN: v = _mm256_blendv_ps(_mm256_sub_ps(zero, one), one, _mm256_cmp_ps(v, zero, _CMP_GE_OQ)); break;
        case QK_SIGN_UNSIGNED: v = _mm256_and_ps(one, _mm256_cmp_ps(v, half, _CMP_GE_OQ)); break;
        case QK_ELASTIC_SIGN:
          v = _mm256_blendv_ps(_mm256_sub_ps(zero, one), one, _mm256_cmp_ps(_mm256_div_ps(v, step), zero, _CMP_GE_OQ));
          break;
        default:
          v = _mm256_round_ps(_mm256_min_ps(_mm256_max_ps(_mm256_div_ps(v, step), lo), hi),
                              _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      }
      _mm256_storeu_ps(out + c, v);
    }
  }
  return c;
}
#endif

template <bool AVX>
inline void levels_row(const QuantSpec& s, const float* x, const float* sh, int64_t n, float* out) {
  int64_t c = 0;
#if defined(__x86_64__) || defined(_M_X64)
  if constexpr (AVX) c = levels_row_avx2(s, x, sh, n, out);
#endif
  for (; c < n; ++c) out[c] = s.level(x[c], sh, c);
}

#if defined(__x86_64__) || defined(_M_X64)
__attribute__((target("avx2,fma"))) int64_t bits_row_avx2(const QuantSpec& s, const float* x, const float* sh,
                                                          int64_t n, uint64_t* words) {
  int64_t c = 0;
  {
    const __m256 step = _mm256_set1_ps(s.step), half = _mm256_set1_ps(0.5f), zero = _mm256_setzero_ps();
    for (; c + 8 <= n; c += 8) {
      __m256 v = _mm256_loadu_ps(x + c), on;
      if (sh) v = _mm256_sub_ps(v, _mm256_loadu_ps(sh + c));
      switch (s.kind) {
        case QK_SIGN: on = _mm256_cmp_ps(v, zero, _CMP_GE_OQ); break;
        case QK_SIGN_UNSIGNED: on = _mm256_cmp_ps(v, half, _CMP_GE_OQ); break;
        case QK_ELASTIC_SIGN: on = _mm256_cmp_ps(_mm256_div_ps(v, step), zero, _CMP_GE_OQ); break;
        default: on = _mm256_cmp_ps(_mm256_div_ps(v, step), half, _CMP_GT_OQ);  // round(clip(·, 0, 1)) = 1
      }
      words[c / 64] |= (uint64_t)(unsigned)_mm256_movemask_ps(on) << (c % 64);
    }
  }
  return c;
}
#endif

template <bool AVX>
inline void bits_row(const QuantSpec& s, const float* x, const float* sh, int64_t n, uint64_t* words) {
  int64_t c = 0;
#if defined(__x86_64__) || defined(_M_X64)
  if constexpr (AVX) c = bits_row_avx2(s, x, sh, n, words);
#endif
  for (; c < n; ++c) words[c / 64] |= (uint64_t)(s.level(x[c], sh, c) > 0.0f) << (c % 64);
}

// row[j] ← softmax(row[j]·mul) over n values: exp(v − max) · (1 / Σ)
#if defined(__x86_64__) || defined(_M_X64)
// Lanes 0 … n − 1 of 8 set (all bits), the others 0: the mask of maskload / maskstore for the last n < 8 values.
__attribute__((target("avx2"))) inline __m256i tail_mask_avx2(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32((int32_t)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// The last n < 8 values of a softmax row (scaled already): row[j] ← exp_avx2(row[j] − max) in one masked vector —
// the same exp as the row's other values, so that a value's e does not depend on where it falls in the row (the
// per-value rows look every key's e up in one table) — each added to `sum` in key order; returns the sum.
__attribute__((target("avx2,fma"))) inline float softmax_tail_avx2(float* row, int64_t n, __m256 vmx, float sum) {
  if (n <= 0) return sum;
  const __m256i live = tail_mask_avx2(n);
  const __m256 e = exp_avx2(_mm256_sub_ps(_mm256_maskload_ps(row, live), vmx));
  _mm256_maskstore_ps(row, live, e);
  alignas(32) float t[8];
  _mm256_store_ps(t, e);
  for (int64_t i = 0; i < n; ++i) sum += t[i];
  return sum;
}

__attribute__((target("avx2,fma"))) void scaled_softmax_avx2(float* row, int64_t n, float mul) {
  int64_t j = 0;
  float mx = -INFINITY, sum = 0.0f;
  const __m256 vmul = _mm256_set1_ps(mul);
  __m256 vmx = _mm256_set1_ps(-INFINITY);
  for (; j + 8 <= n; j += 8) {
    const __m256 v = _mm256_mul_ps(_mm256_loadu_ps(row + j), vmul);
    _mm256_storeu_ps(row + j, v);
    vmx = _mm256_max_ps(vmx, v);
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, vmx);
  for (int i = 0; i < 8; ++i) mx = std::max(mx, lanes[i]);
  for (int64_t t = j; t < n; ++t) mx = std::max(mx, row[t] *= mul);
  vmx = _mm256_set1_ps(mx);
  __m256 acc = _mm256_setzero_ps();
  for (j = 0; j + 8 <= n; j += 8) {
    const __m256 e = exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(row + j), vmx));
    _mm256_storeu_ps(row + j, e);
    acc = _mm256_add_ps(acc, e);
  }
  _mm256_store_ps(lanes, acc);
  for (int i = 0; i < 8; ++i) sum += lanes[i];
  sum = softmax_tail_avx2(row + j, n - j, vmx, sum);
  const __m256 vinv = _mm256_set1_ps(1.0f / sum);
  for (j = 0; j + 8 <= n; j += 8) _mm256_storeu_ps(row + j, _mm256_mul_ps(_mm256_loadu_ps(row + j), vinv));
  for (; j < n; ++j) row[j] *= 1.0f / sum;
}

// The same values as scaled_softmax_avx2 bit for bit: products, max and exp per element are the same operations,
// 16 at a time, and the sum is added in the AVX2 version's order (8-lane partial sums over consecutive 8-value
// chunks, then lane by lane, then the scalar tail).
__attribute__((target("avx512f,avx512dq,avx2,fma"))) void scaled_softmax_avx512(float* row, int64_t n, float mul) {
  int64_t j = 0;
  float mx = -INFINITY, sum = 0.0f;
  const __m512 vmul = _mm512_set1_ps(mul);
  __m512 vmx = _mm512_set1_ps(-INFINITY);
  for (; j + 16 <= n; j += 16) {
    const __m512 v = _mm512_mul_ps(_mm512_loadu_ps(row + j), vmul);
    _mm512_storeu_ps(row + j, v);
    vmx = _mm512_max_ps(vmx, v);
  }
  for (; j + 8 <= n; j += 8) {  // (max is exact in any order)
    const __m256 v = _mm256_mul_ps(_mm256_loadu_ps(row + j), _mm512_castps512_ps256(vmul));
    _mm256_storeu_ps(row + j, v);
    vmx = _mm512_mask_max_ps(vmx, 0x00FF, vmx, _mm512_castps256_ps512(v));  // lanes 8 … 15 kept
  }
  mx = _mm512_reduce_max_ps(vmx);
  for (int64_t t = j; t < n; ++t) mx = std::max(mx, row[t] *= mul);
  const __m512 vm = _mm512_set1_ps(mx);
  __m256 acc = _mm256_setzero_ps();
  for (j = 0; j + 16 <= n; j += 16) {
    const __m512 e = exp_avx512(_mm512_sub_ps(_mm512_loadu_ps(row + j), vm));
    _mm512_storeu_ps(row + j, e);
    acc = _mm256_add_ps(acc, _mm512_castps512_ps256(e));
    acc = _mm256_add_ps(acc, _mm512_extractf32x8_ps(e, 1));
  }
  for (; j + 8 <= n; j += 8) {
    const __m256 e = exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(row + j), _mm512_castps512_ps256(vm)));
    _mm256_storeu_ps(row + j, e);
    acc = _mm256_add_ps(acc, e);
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, acc);
  for (int i = 0; i < 8; ++i) sum += lanes[i];
  sum = softmax_tail_avx2(row + j, n - j, _mm512_castps512_ps256(vm), sum);
  const __m512 vinv = _mm512_set1_ps(1.0f / sum);
  for (j = 0; j + 16 <= n; j += 16) _mm512_storeu_ps(row + j, _mm512_mul_ps(_mm512_loadu_ps(row + j), vinv));
  for (; j < n; ++j) row[j] *= 1.0f / sum;
}
#endif

template <bool AVX>
inline void scaled_softmax(float* row, int64_t n, float mul) {
#if defined(__x86_64__) || defined(_M_X64)
  if constexpr (AVX) return scaled_softmax_avx2(row, n, mul);
#endif
  float mx = -INFINITY, sum = 0.0f;
  for (int64_t t = 0; t < n; ++t) mx = std::max(mx, row[t] *= mul);
  for (int64_t j = 0; j < n; ++j) {
    row[j] = std::exp(row[j] - mx);
    sum += row[j];
  }
  const float inv = 1.0f / sum;
  for (int64_t j = 0; j < n; ++j) row[j] *= inv;
}

// Q, K and V as bits [tokens, words] (bit c of a row = channel c's 1-bit level is +1), when the Q/K/V Linears'
// epilogues packed them (layer_forward); null: the attention quantizes the float outputs itself.
struct QkvBits {
  const uint64_t *q, *k, *v;
  int64_t words;
  // null: the context rows are written as floats to ctx; else packed straight into the attention output Linear's
  // input bits (its quantizer's compare, pack_row_isa on each head's D values at bit h·D of the row; rows of this
  // sequence; `pop` not written: the caller counts the rows' bits after all heads)
  const PackTarget* out = nullptr;
};

// Where row i of a head's context (D floats) is computed: straight into ctx when the context stays float, else into
// the caller's scratch row `local` (≥ D floats), which context_out then packs.
inline float* context_row(const QkvBits& qkv, float* local, float* ctx, int64_t i, int64_t h, int64_t D, int64_t ld) {
  return qkv.out ? local : ctx + i * ld + h * D;
}

// Row i of a head's context (D floats in `o`, from context_row) packed into the attention output Linear's input bits
// when `qkv.out` says so (ld = heads·D: the shift of channel h·D + d, the SIGNED_GELU upper half at +ld); nothing to
// do when the context stays float (context_row wrote it to ctx).
inline void context_out(const QkvBits& qkv, const float* o, int64_t i, int64_t h, int64_t D, int64_t ld) {
  if (!qkv.out) return;
  const PackTarget& p = *qkv.out;
  pack_row_isa(g_isa, o, D, p.shift ? p.shift + h * D : nullptr, p.s, p.thr, p.mode, p.bits + i * p.ld + h * D / 8,
               ld);
}

// Bits offset … offset + n − 1 of a row of words into out[0 … ceil(n/64) − 1] (the bits above n cleared).
inline void head_bits(const uint64_t* row, int64_t offset, int64_t n, uint64_t* out) {
  for (int64_t w = 0; w * 64 < n; ++w) {
    const int64_t o = offset + 64 * w, take = std::min<int64_t>(64, n - 64 * w), r = o & 63;
    uint64_t x = row[o >> 6] >> r;
    if (r && r + take > 64) x |= row[(o >> 6) + 1] << (64 - r);
    out[w] = take == 64 ? x : x & ((1ULL << take) - 1);
  }
}

// 64 × 64 bit matrix transposed in place: bit j of a[i] ↔ bit i of a[j] (Hacker's Delight, 7–3: swap the
// off-diagonal blocks of 32, then of 16, … within each).
inline void transpose64(uint64_t* a) {
  uint64_t m = 0x00000000FFFFFFFFULL;
  for (int j = 32; j != 0; j >>= 1, m ^= m << j)
    for (int k = 0; k < 64; k = ((k | j) + 1) & ~j) {
      const uint64_t t = ((a[k] >> j) ^ a[k | j]) & m;
      a[k] ^= t << j;
      a[k | j] ^= t;
    }
}

#if defined(__x86_64__) || defined(_M_X64)
// AVX-512 VPOPCNTDQ versions of the 1-bit attention's bit loops (attention_head_body<…, VPOP = true>); each returns
// the same integers as the scalar loop it replaces.
// ones[j] = popcount(q0 XOR kb[j]), j < n: 8 keys per zmm, stored 16 at a time (one 64-byte store per 16 keys, so
// bit_softmax_rows_avx512's 64-byte loads of ones right after are forwarded from one store each: loads spanning two
// 32-byte stores are not, and waited for them to reach the cache — most of that function's time). The last n mod 16
// keys too: masked loads of kb, one whole 64-byte store, so ones[n … round_up(n, 16) − 1] are written as well
// (popcount(q0)): the buffer holds round_up(n, 16) values (every caller's does: rows of Tp, or 256).
__attribute__((target("avx512f,avx512vpopcntdq"))) inline void xor_popcounts_avx512(uint64_t q0, const uint64_t* kb,
                                                                                    int64_t n, int32_t* ones) {
  const __m512i vq = _mm512_set1_epi64((long long)q0);
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) {
    const __m256i a = _mm512_cvtepi64_epi32(_mm512_popcnt_epi64(_mm512_xor_si512(vq, _mm512_loadu_si512(kb + j))));
    const __m256i b =
        _mm512_cvtepi64_epi32(_mm512_popcnt_epi64(_mm512_xor_si512(vq, _mm512_loadu_si512(kb + j + 8))));
    _mm512_storeu_si512(ones + j, _mm512_inserti64x4(_mm512_castsi256_si512(a), b, 1));
  }
  if (j < n) {
    const unsigned live = (1u << (n - j)) - 1;  // n − j < 16 keys
    const __m256i a = _mm512_cvtepi64_epi32(
        _mm512_popcnt_epi64(_mm512_xor_si512(vq, _mm512_maskz_loadu_epi64((__mmask8)live, kb + j))));
    const __m256i b = _mm512_cvtepi64_epi32(
        _mm512_popcnt_epi64(_mm512_xor_si512(vq, _mm512_maskz_loadu_epi64((__mmask8)(live >> 8), kb + j + 8))));
    _mm512_storeu_si512(ones + j, _mm512_inserti64x4(_mm512_castsi256_si512(a), b, 1));
  }
}

// agree[d] = Σ_w popcount(arow[w] AND vt[w·Dp + d]), d < D: 8 dimensions per zmm.
__attribute__((target("avx512f,avx512vpopcntdq"))) inline void and_popcounts_avx512(const uint64_t* arow, int64_t tw,
                                                                                   const uint64_t* vt, int64_t Dp,
                                                                                   int64_t D, int32_t* agree) {
  int64_t d = 0;
  for (; d + 8 <= D; d += 8) {
    __m512i acc = _mm512_setzero_si512();
    for (int64_t w = 0; w < tw; ++w)
      acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(_mm512_and_si512(_mm512_set1_epi64((long long)arow[w]),
                                                                       _mm512_loadu_si512(vt + w * Dp + d))));
    _mm256_storeu_si256((__m256i*)(agree + d), _mm512_cvtepi64_epi32(acc));
  }
  for (; d < D; ++d) {
    int64_t a = 0;
    for (int64_t w = 0; w < tw; ++w) a += __builtin_popcountll(arow[w] & vt[w * Dp + d]);
    agree[d] = (int32_t)a;
  }
}
#endif

#if defined(__x86_64__) || defined(_M_X64)
// The VPOPCNTDQ path's BiT context row straight into the attention output Linear's input bits (qkv.out), for D a
// multiple of 16: and_popcounts_avx512's counts, context_row_avx2's o[d] = pv · (2·agree[d] − selected) and
// pack_row_avx512's compare (pack16_avx512), 16 dimensions at a time in registers — the same integers, floats and
// bits as those three calls, without the counts' and the row's stores and reloads and the call per row (the 64-byte
// loads of a row just written by 32-byte stores are not forwarded).
__attribute__((target("avx512f,avx512bw,avx512dq,avx512vpopcntdq"))) inline void context_bits_avx512(
    const uint64_t* arow, int64_t tw, const uint64_t* vt, int64_t Dp, int64_t D, int32_t selected, float pv,
    const float* shift, float s, float thr, int mode, int64_t hi, uint8_t* out) {
  const __m512i sel = _mm512_set1_epi32(selected);
  const __m512 vpv = _mm512_set1_ps(pv), vs = _mm512_set1_ps(s), vthr = _mm512_set1_ps(mode == SIGNED ? 0.0f : thr);
  for (int64_t d = 0; d < D; d += 16) {
    __m512i lo = _mm512_setzero_si512(), up = _mm512_setzero_si512();
    for (int64_t w = 0; w < tw; ++w) {
      const __m512i row = _mm512_set1_epi64((long long)arow[w]);
      lo = _mm512_add_epi64(lo, _mm512_popcnt_epi64(_mm512_and_si512(row, _mm512_loadu_si512(vt + w * Dp + d))));
      up = _mm512_add_epi64(up, _mm512_popcnt_epi64(_mm512_and_si512(row, _mm512_loadu_si512(vt + w * Dp + d + 8))));
    }
    const __m512i agree =
        _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtepi64_epi32(lo)), _mm512_cvtepi64_epi32(up), 1);
    const __m512 o = _mm512_mul_ps(vpv, _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_slli_epi32(agree, 1), sel)));
    const __mmask16 on = pack16_avx512(o, shift, d, vs, vthr, mode, hi);
    std::memcpy(out + d / 8, &on, 2);
  }
}
#endif

#if defined(__x86_64__) || defined(_M_X64)
// AVX2 twins of the two loops above (the attention's bit loops on AVX2 and AVX-512 without VPOPCNTDQ), the same
// integers: popcounts per 64-bit lane by nibble lookup (BitsAvx2::popcnt_bytes) and vpsadbw, 8 keys or dimensions
// per step.
__attribute__((target("avx2"))) inline __m256i popcount_lanes_avx2(__m256i v) {
  return _mm256_sad_epu8(BitsAvx2::popcnt_bytes(v, BitsAvx2::nibble_lut(), _mm256_set1_epi8(0x0f)),
                         _mm256_setzero_si256());
}

// The counts of 4 + 4 lanes (two vectors of 64-bit counts < 2³²) as 8 int32 in lane order.
__attribute__((target("avx2"))) inline __m256i lanes_to_int32_avx2(__m256i a, __m256i b) {
  // a | b << 32 holds a0 b0 a1 b1 a2 b2 a3 b3 as int32; the permutation puts them in order
  return _mm256_permutevar8x32_epi32(_mm256_or_si256(a, _mm256_slli_epi64(b, 32)),
                                     _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7));
}

// ones[j] = popcount(q0 XOR kb[j]), j < n (xor_popcounts_avx512's loop).
__attribute__((target("avx2,popcnt"))) inline void xor_popcounts_avx2(uint64_t q0, const uint64_t* kb, int64_t n,
                                                                      int32_t* ones) {
  const __m256i vq = _mm256_set1_epi64x((long long)q0);
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256i a = popcount_lanes_avx2(_mm256_xor_si256(vq, _mm256_loadu_si256((const __m256i*)(kb + j))));
    const __m256i b = popcount_lanes_avx2(_mm256_xor_si256(vq, _mm256_loadu_si256((const __m256i*)(kb + j + 4))));
    _mm256_storeu_si256((__m256i*)(ones + j), lanes_to_int32_avx2(a, b));
  }
  for (; j < n; ++j) ones[j] = (int32_t)__builtin_popcountll(q0 ^ kb[j]);
}

// agree[d] = Σ_w popcount(arow[w] AND vt[w·Dp + d]), d < D (and_popcounts_avx512's loop).
__attribute__((target("avx2,popcnt"))) inline void and_popcounts_avx2(const uint64_t* arow, int64_t tw,
                                                                      const uint64_t* vt, int64_t Dp, int64_t D,
                                                                      int32_t* agree) {
  int64_t d = 0;
  for (; d + 8 <= D; d += 8) {
    __m256i a = _mm256_setzero_si256(), b = _mm256_setzero_si256();
    for (int64_t w = 0; w < tw; ++w) {
      const __m256i row = _mm256_set1_epi64x((long long)arow[w]);
      const uint64_t* col = vt + w * Dp + d;
      const __m256i lo = _mm256_loadu_si256((const __m256i*)col), hi = _mm256_loadu_si256((const __m256i*)(col + 4));
      a = _mm256_add_epi64(a, popcount_lanes_avx2(_mm256_and_si256(row, lo)));
      b = _mm256_add_epi64(b, popcount_lanes_avx2(_mm256_and_si256(row, hi)));
    }
    _mm256_storeu_si256((__m256i*)(agree + d), lanes_to_int32_avx2(a, b));
  }
  for (; d < D; ++d) {
    int64_t a = 0;
    for (int64_t w = 0; w < tw; ++w) a += __builtin_popcountll(arow[w] & vt[w * Dp + d]);
    agree[d] = (int32_t)a;
  }
}

// context_bits_avx512's AVX2 twin (D a multiple of 8): and_popcounts_avx2's counts, context_row_avx2's row and
// pack_row_avx2's compare (pack8_avx2), 8 dimensions at a time in registers — the same integers, floats and bits.
__attribute__((target("avx2,popcnt"))) inline void context_bits_avx2(const uint64_t* arow, int64_t tw,
                                                                     const uint64_t* vt, int64_t Dp, int64_t D,
                                                                     int32_t selected, float pv, const float* shift,
                                                                     float s, float thr, int mode, int64_t hi,
                                                                     uint8_t* out) {
  const __m256i sel = _mm256_set1_epi32(selected);
  const __m256 vpv = _mm256_set1_ps(pv), vs = _mm256_set1_ps(s), vthr = _mm256_set1_ps(mode == SIGNED ? 0.0f : thr);
  for (int64_t d = 0; d < D; d += 8) {
    __m256i a = _mm256_setzero_si256(), b = _mm256_setzero_si256();
    for (int64_t w = 0; w < tw; ++w) {
      const __m256i row = _mm256_set1_epi64x((long long)arow[w]);
      const uint64_t* col = vt + w * Dp + d;
      a = _mm256_add_epi64(a, popcount_lanes_avx2(_mm256_and_si256(row, _mm256_loadu_si256((const __m256i*)col))));
      b = _mm256_add_epi64(b,
                           popcount_lanes_avx2(_mm256_and_si256(row, _mm256_loadu_si256((const __m256i*)(col + 4)))));
    }
    const __m256i twice = _mm256_slli_epi32(lanes_to_int32_avx2(a, b), 1);
    const __m256 o = _mm256_mul_ps(vpv, _mm256_cvtepi32_ps(_mm256_sub_epi32(twice, sel)));
    out[d / 8] = (uint8_t)pack8_avx2(o, shift, d, vs, vthr, mode, hi);
  }
}

// o[d] = pv · (2·agree[d] − selected), d < D: the context row of a 1-bit attention (the same conversion and product
// as the scalar loop).
__attribute__((target("avx2"))) inline void context_row_avx2(const int32_t* agree, int64_t D, int32_t selected,
                                                             float pv, float* o) {
  const __m256i sel = _mm256_set1_epi32(selected);
  const __m256 vpv = _mm256_set1_ps(pv);
  int64_t d = 0;
  for (; d + 8 <= D; d += 8) {
    const __m256i twice = _mm256_slli_epi32(_mm256_loadu_si256((const __m256i*)(agree + d)), 1);
    _mm256_storeu_ps(o + d, _mm256_mul_ps(vpv, _mm256_cvtepi32_ps(_mm256_sub_epi32(twice, sel))));
  }
  for (; d < D; ++d) o[d] = pv * (float)(2 * agree[d] - selected);
}
#endif

#if defined(__x86_64__) || defined(_M_X64)
// e[u] for 16 indices u < n (n ≤ 80): one permute for n ≤ 32, two and a blend for n ≤ 64 (permutex2var reads the low
// 5 bits of u), a gather above; e0 … e3 = e[0 … 63].
__attribute__((target("avx512f"))) inline __m512 lookup_values_avx512(__m512i u, int64_t n, const float* e, __m512 e0,
                                                                      __m512 e1, __m512 e2, __m512 e3) {
  if (n <= 32) return _mm512_permutex2var_ps(e0, u, e1);
  if (n <= 64)
    return _mm512_mask_blend_ps(_mm512_cmpge_epi32_mask(u, _mm512_set1_epi32(32)), _mm512_permutex2var_ps(e0, u, e1),
                                _mm512_permutex2var_ps(e2, u, e3));
  return _mm512_i32gather_ps(u, e, 4);
}

// The end of scaled_softmax_avx2's sum Σ_j e_j for the per-value rows (bit_softmax_rows_avx2 / _avx512): the 8
// lanes of acc (the first T8 keys' partial sums) added in lane order, then the keys T8 … T − 1 one by one, their e
// looked up in the row's table e[ones − lo] (softmax_tail_avx2 computes them with the same exp).
__attribute__((target("avx2"))) inline float row_sum_end(__m256 acc, const int32_t* ones, int64_t T8, int64_t T,
                                                         int32_t lo, const float* e) {
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, acc);
  float sum = 0.0f;
  for (int i = 0; i < 8; ++i) sum += lanes[i];
  for (int64_t j = T8; j < T; ++j) sum += e[ones[j] - lo];
  return sum;
}

// R rows of BiT's attention probabilities as bits, from the keys' popcounts (1-bit Q and K, one word per head,
// VPOPCNTDQ path): the same values, bit for bit, as the per-key path (scores (float)(D − 2·ones)·mul,
// scaled_softmax_avx512, bits_row), computed per distinct score instead of per key. A row's dot products D − 2·ones
// take at most D + 1 values, so exp runs once per value (≤ 5 vectors at D = 64 instead of T/16) and the probability
// quantizer once per value; for the sum Σ_j e_j each key's e is looked up in registers and added in scaled_softmax's
// order (the last T mod 8 keys one by one, as there). The probability falls as ones grows (mul > 0: the steps are
// ≥ 1e-5 and the scaling positive), so the keys whose bit is set are those with ones ≤ a threshold: one compare per
// 16 keys. Each row is a chain of dependent steps (the sum alone is 16 dependent adds per lane at T = 128), so R
// independent rows run interleaved, step by step: with the keys' popcounts, 4 rows took 0.66 × the time of single
// rows (48 against 74 ns per row of 128 keys; an ad-hoc loop over random rows, one thread, AMD EPYC Zen 4).
// Row r: ones[r][0 … T−1] ∈ [0, D], D ≤ 64; done[r] = false, and nothing written to arow[r], when its set values
// are not such a prefix (never for mul > 0; the caller then takes the per-key path), else every word of
// arow[r][0 … ceil(T/64) − 1] written (no zeroing needed before).
template <int R>
__attribute__((target("avx512f,avx512dq,avx512vl,avx2,fma"))) inline void bit_softmax_rows_avx512(
    const int32_t* const* ones, int64_t T, int64_t D, float mul, const QuantSpec& sp, uint64_t* const* arow,
    bool* done) {
  const int64_t T8 = T - T % 8;
  int32_t lo[R], hi[R];
  {
    __m512i vlo[R], vhi[R];
    for (int r = 0; r < R; ++r) vlo[r] = _mm512_set1_epi32(INT32_MAX), vhi[r] = _mm512_set1_epi32(INT32_MIN);
    int64_t j = 0;
    for (; j + 16 <= T; j += 16)
      for (int r = 0; r < R; ++r) {
        const __m512i o = _mm512_loadu_si512(ones[r] + j);
        vlo[r] = _mm512_min_epi32(vlo[r], o);
        vhi[r] = _mm512_max_epi32(vhi[r], o);
      }
    for (int r = 0; r < R; ++r) {
      if (j < T) {  // the last T mod 16 keys, masked
        const __mmask16 live = (__mmask16)((1u << (T - j)) - 1);
        const __m512i o = _mm512_maskz_loadu_epi32(live, ones[r] + j);
        vlo[r] = _mm512_mask_min_epi32(vlo[r], live, vlo[r], o);
        vhi[r] = _mm512_mask_max_epi32(vhi[r], live, vhi[r], o);
      }
      lo[r] = _mm512_reduce_min_epi32(vlo[r]), hi[r] = _mm512_reduce_max_epi32(vhi[r]);
    }
  }
  alignas(64) float e[R][80] = {};
  int64_t n[R];
  float mx[R];
  const __m512 vmul = _mm512_set1_ps(mul);
  const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  for (int r = 0; r < R; ++r) {
    n[r] = hi[r] - lo[r] + 1;
    const float s_lo = (float)((int32_t)D - 2 * lo[r]) * mul, s_hi = (float)((int32_t)D - 2 * hi[r]) * mul;
    mx[r] = std::max(s_lo, s_hi);
  }
  int64_t nmax = 0;
  for (int r = 0; r < R; ++r) nmax = std::max(nmax, n[r]);
  for (int64_t u = 0; u < nmax; u += 16)
    for (int r = 0; r < R; ++r) {
      if (u >= n[r]) continue;
      const __m512i dots = _mm512_sub_epi32(_mm512_set1_epi32((int32_t)D - 2 * lo[r]),
                                            _mm512_slli_epi32(_mm512_add_epi32(_mm512_set1_epi32((int32_t)u), iota),
                                                              1));
      _mm512_store_ps(e[r] + u, exp_avx512(_mm512_sub_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(dots), vmul),
                                                         _mm512_set1_ps(mx[r]))));
    }
  __m256 acc[R];
  __m512i vlo16[R];
  __m512 ev[R][4];
  for (int r = 0; r < R; ++r) {
    acc[r] = _mm256_setzero_ps();
    vlo16[r] = _mm512_set1_epi32(lo[r]);
    for (int b = 0; b < 4; ++b) ev[r][b] = _mm512_load_ps(e[r] + 16 * b);
  }
  int64_t j = 0;
  for (; j + 16 <= T8; j += 16)
    for (int r = 0; r < R; ++r) {
      const __m512 g = lookup_values_avx512(_mm512_sub_epi32(_mm512_loadu_si512(ones[r] + j), vlo16[r]), n[r], e[r],
                                            ev[r][0], ev[r][1], ev[r][2], ev[r][3]);
      acc[r] = _mm256_add_ps(acc[r], _mm512_castps512_ps256(g));
      acc[r] = _mm256_add_ps(acc[r], _mm512_extractf32x8_ps(g, 1));
    }
  if (j < T8)
    for (int r = 0; r < R; ++r)
      acc[r] = _mm256_add_ps(acc[r], _mm512_castps512_ps256(lookup_values_avx512(
                                         _mm512_sub_epi32(_mm512_castsi256_si512(
                                                              _mm256_loadu_si256((const __m256i*)(ones[r] + j))),
                                                          vlo16[r]),
                                         n[r], e[r], ev[r][0], ev[r][1], ev[r][2], ev[r][3])));
  float inv[R];
  for (int r = 0; r < R; ++r) inv[r] = 1.0f / row_sum_end(acc[r], ones[r], T8, T, lo[r], e[r]);
  const __m512 vstep = _mm512_set1_ps(sp.step), half = _mm512_set1_ps(0.5f);
  int64_t count[R];
  for (int r = 0; r < R; ++r) {
    const __m512 vinv = _mm512_set1_ps(inv[r]);
    count[r] = 0;
    bool prefix = true;
    for (int64_t u = 0; u < n[r]; u += 16) {
      const __mmask16 live = n[r] - u >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n[r] - u)) - 1);
      const __m512 pr = _mm512_mul_ps(_mm512_load_ps(e[r] + u), vinv);
      const __mmask16 on = live & (sp.kind == QK_SIGN_UNSIGNED ? _mm512_cmp_ps_mask(pr, half, _CMP_GE_OQ)
                                                               : _mm512_cmp_ps_mask(_mm512_div_ps(pr, vstep), half,
                                                                                    _CMP_GT_OQ));
      const int c = __builtin_popcount(on);
      if (on != (__mmask16)((1u << c) - 1) || (c && count[r] != u)) prefix = false;
      count[r] += c;
    }
    done[r] = prefix;
  }
  for (int r = 0; r < R; ++r) {
    if (!done[r]) continue;
    // every key's bit, the last T mod 8 keys' too: their e are the table's, so the same threshold decides them
    const __m512i thr = _mm512_set1_epi32(lo[r] + (int32_t)count[r] - 1);
    for (int64_t w = 0; w * 64 < T; ++w) {
      uint64_t word = 0;
      const int64_t end = std::min<int64_t>(T, 64 * w + 64);
      for (j = 64 * w; j + 16 <= end; j += 16)
        word |= (uint64_t)_mm512_cmple_epi32_mask(_mm512_loadu_si512(ones[r] + j), thr) << (j % 64);
      if (j < end) {
        const __mmask16 live = (__mmask16)((1u << (end - j)) - 1);
        word |= (uint64_t)_mm512_mask_cmple_epi32_mask(live, _mm512_maskz_loadu_epi32(live, ones[r] + j), thr)
                << (j % 64);
      }
      arow[r][w] = word;
    }
  }
}

// Σ over the first T8 keys' e[ones − lo] as 8-lane partial sums in key order (scaled_softmax_avx2's): e[u] looked
// up in registers, NB vectors e[0 … 8·NB − 1] by permutes (each reads the low 3 bits of u) blended by u's block of 8.
template <int NB>
__attribute__((target("avx2"))) inline __m256 sum_values_avx2(const int32_t* ones, int64_t T8, int32_t lo,
                                                               const float* e) {
  __m256 ev[NB];
  for (int b = 0; b < NB; ++b) ev[b] = _mm256_load_ps(e + 8 * b);
  const __m256i vlo = _mm256_set1_epi32(lo);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t j = 0; j < T8; j += 8) {
    const __m256i u = _mm256_sub_epi32(_mm256_loadu_si256((const __m256i*)(ones + j)), vlo);
    __m256 r = _mm256_permutevar8x32_ps(ev[0], u);
    for (int b = 1; b < NB; ++b)
      r = _mm256_blendv_ps(r, _mm256_permutevar8x32_ps(ev[b], u),
                           _mm256_castsi256_ps(_mm256_cmpgt_epi32(u, _mm256_set1_epi32(8 * b - 1))));
    acc = _mm256_add_ps(acc, r);
  }
  return acc;
}

// The same with a gather (more than 32 values).
__attribute__((target("avx2"))) inline __m256 sum_values_gather_avx2(const int32_t* ones, int64_t T8, int32_t lo,
                                                                      const float* e) {
  const __m256i vlo = _mm256_set1_epi32(lo);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t j = 0; j < T8; j += 8)
    acc = _mm256_add_ps(
        acc, _mm256_i32gather_ps(e, _mm256_sub_epi32(_mm256_loadu_si256((const __m256i*)(ones + j)), vlo), 4));
  return acc;
}

// sum_values_avx2<NB> for R rows at once, their chains interleaved (each row's own lo and e table: e + 72·r).
template <int R, int NB>
__attribute__((target("avx2"))) inline void sum_values_rows_avx2(const int32_t* const* ones, int64_t T8,
                                                                 const int32_t* lo, const float* e, __m256* acc) {
  __m256 ev[R][NB];
  __m256i vlo[R];
  for (int r = 0; r < R; ++r) {
    for (int b = 0; b < NB; ++b) ev[r][b] = _mm256_load_ps(e + 72 * r + 8 * b);
    vlo[r] = _mm256_set1_epi32(lo[r]);
    acc[r] = _mm256_setzero_ps();
  }
  for (int64_t j = 0; j < T8; j += 8)
    for (int r = 0; r < R; ++r) {
      const __m256i u = _mm256_sub_epi32(_mm256_loadu_si256((const __m256i*)(ones[r] + j)), vlo[r]);
      __m256 x = _mm256_permutevar8x32_ps(ev[r][0], u);
      for (int b = 1; b < NB; ++b)
        x = _mm256_blendv_ps(x, _mm256_permutevar8x32_ps(ev[r][b], u),
                             _mm256_castsi256_ps(_mm256_cmpgt_epi32(u, _mm256_set1_epi32(8 * b - 1))));
      acc[r] = _mm256_add_ps(acc[r], x);
    }
}

// bit_softmax_rows_avx512's AVX2 twin: R rows of BiT's 1-bit probabilities per distinct score, the same bits as
// the per-key path (scaled_softmax_avx2 + bits_row) — the same exp per value, the sum Σ_j e_j added in
// scaled_softmax_avx2's order (8-lane partial sums, lanes 0 … 7, then the last T mod 8 keys one by one), the same
// comparisons per value — with the rows' chains interleaved. In the same ad-hoc loop (AVX2 code on the Zen 4), 4 rows
// took 0.78 × the time of single rows and 2 rows 0.84 ×, though 4 rows' tables of 32 values do not fit the 16 ymm
// registers. Row r: ones[r][0 … T−1] ∈ [0, D], D ≤ 64; done[r] = false, nothing written to arow[r], when its set
// values are not a prefix of the values (never for mul > 0), else every word of arow[r] written.
template <int R>
__attribute__((target("avx2,fma"))) inline void bit_softmax_rows_avx2(const int32_t* const* ones, int64_t T, int64_t D,
                                                                      float mul, const QuantSpec& sp,
                                                                      uint64_t* const* arow, bool* done) {
  const int64_t T8 = T - T % 8;
  int32_t lo[R], hi[R];
  {
    __m256i vlo[R], vhi[R];
    for (int r = 0; r < R; ++r) vlo[r] = _mm256_set1_epi32(INT32_MAX), vhi[r] = _mm256_set1_epi32(INT32_MIN);
    int64_t j = 0;
    for (; j + 8 <= T; j += 8)
      for (int r = 0; r < R; ++r) {
        const __m256i o = _mm256_loadu_si256((const __m256i*)(ones[r] + j));
        vlo[r] = _mm256_min_epi32(vlo[r], o);
        vhi[r] = _mm256_max_epi32(vhi[r], o);
      }
    if (j < T) {  // the last T mod 8 keys, masked: masked-off lanes count as INT32_MAX (min) and 0 ≤ ones (max)
      const __m256i live = tail_mask_avx2(T - j);
      for (int r = 0; r < R; ++r) {
        const __m256i o = _mm256_maskload_epi32(ones[r] + j, live);
        vlo[r] = _mm256_min_epi32(vlo[r], _mm256_blendv_epi8(_mm256_set1_epi32(INT32_MAX), o, live));
        vhi[r] = _mm256_max_epi32(vhi[r], o);
      }
    }
    for (int r = 0; r < R; ++r) {
      alignas(32) int32_t lows[8], highs[8];
      _mm256_store_si256((__m256i*)lows, vlo[r]);
      _mm256_store_si256((__m256i*)highs, vhi[r]);
      lo[r] = INT32_MAX, hi[r] = INT32_MIN;
      for (int i = 0; i < 8; ++i) lo[r] = std::min(lo[r], lows[i]), hi[r] = std::max(hi[r], highs[i]);
    }
  }
  alignas(32) float e[R * 72] = {};  // row r at e + 72·r (≤ 65 values, written in whole vectors of 8)
  int64_t n[R], nmax = 0;
  float mx[R];
  const __m256 vmul = _mm256_set1_ps(mul);
  for (int r = 0; r < R; ++r) {
    n[r] = hi[r] - lo[r] + 1;
    nmax = std::max(nmax, n[r]);
    const float s_lo = (float)((int32_t)D - 2 * lo[r]) * mul, s_hi = (float)((int32_t)D - 2 * hi[r]) * mul;
    mx[r] = std::max(s_lo, s_hi);
  }
  for (int64_t u = 0; u < nmax; u += 8)
    for (int r = 0; r < R; ++r) {
      if (u >= n[r]) continue;
      const __m256i dots = _mm256_sub_epi32(
          _mm256_set1_epi32((int32_t)D - 2 * lo[r]),
          _mm256_slli_epi32(
              _mm256_add_epi32(_mm256_set1_epi32((int32_t)u), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)), 1));
      _mm256_store_ps(e + 72 * r + u,
                      exp_avx2(_mm256_sub_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(dots), vmul), _mm256_set1_ps(mx[r]))));
    }
  // the sums: every row's table in registers (a permute per 8 values; a row needing fewer reads only its own), or
  // row by row with a gather when a row has more than 32 values
  __m256 acc[R];
  if (nmax <= 8)
    sum_values_rows_avx2<R, 1>(ones, T8, lo, e, acc);
  else if (nmax <= 16)
    sum_values_rows_avx2<R, 2>(ones, T8, lo, e, acc);
  else if (nmax <= 24)
    sum_values_rows_avx2<R, 3>(ones, T8, lo, e, acc);
  else if (nmax <= 32)
    sum_values_rows_avx2<R, 4>(ones, T8, lo, e, acc);
  else
    for (int r = 0; r < R; ++r)
      acc[r] = n[r] <= 8    ? sum_values_avx2<1>(ones[r], T8, lo[r], e + 72 * r)
               : n[r] <= 16 ? sum_values_avx2<2>(ones[r], T8, lo[r], e + 72 * r)
               : n[r] <= 24 ? sum_values_avx2<3>(ones[r], T8, lo[r], e + 72 * r)
               : n[r] <= 32 ? sum_values_avx2<4>(ones[r], T8, lo[r], e + 72 * r)
                            : sum_values_gather_avx2(ones[r], T8, lo[r], e + 72 * r);
  float inv[R];
  for (int r = 0; r < R; ++r) inv[r] = 1.0f / row_sum_end(acc[r], ones[r], T8, T, lo[r], e + 72 * r);
  // the 1-bit probability of each value, 8 at a time (bits_row_avx2's comparisons); the set ones must be u < count
  const __m256 vstep = _mm256_set1_ps(sp.step), half = _mm256_set1_ps(0.5f);
  for (int r = 0; r < R; ++r) {
    const __m256 vinv = _mm256_set1_ps(inv[r]);
    int64_t count = 0;
    bool prefix = true;
    for (int64_t u = 0; u < n[r]; u += 8) {
      const unsigned live = n[r] - u >= 8 ? 0xFFu : (1u << (n[r] - u)) - 1;
      const __m256 pr = _mm256_mul_ps(_mm256_load_ps(e + 72 * r + u), vinv);
      const __m256 on = sp.kind == QK_SIGN_UNSIGNED ? _mm256_cmp_ps(pr, half, _CMP_GE_OQ)
                                                    : _mm256_cmp_ps(_mm256_div_ps(pr, vstep), half, _CMP_GT_OQ);
      const unsigned m = live & (unsigned)_mm256_movemask_ps(on);
      const int c = __builtin_popcount(m);
      if (m != (1u << c) - 1 || (c && count != u)) prefix = false;
      count += c;
    }
    done[r] = prefix;
    if (!prefix) continue;
    const __m256i above = _mm256_set1_epi32(lo[r] + (int32_t)count);  // set: ones < lo + count
    for (int64_t w = 0; w * 64 < T; ++w) {  // a word of bits in a register, stored once (every word of the row)
      uint64_t word = 0;
      for (int64_t j = 64 * w; j < std::min<int64_t>(T8, 64 * w + 64); j += 8) {
        const __m256i o = _mm256_loadu_si256((const __m256i*)(ones[r] + j));
        word |= (uint64_t)(unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(above, o))) << (j % 64);
      }
      arow[r][w] = word;
    }
    if (T8 < T) {  // the last T mod 8 keys: their e are the table's, so the same threshold decides them
      const __m256i o = _mm256_maskload_epi32(ones[r] + T8, tail_mask_avx2(T - T8));
      const unsigned on = (unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(above, o)));
      arow[r][T8 / 64] |= (uint64_t)(on & ((1u << (T - T8)) - 1)) << (T8 % 64);
    }
  }
}
#endif

#if defined(__x86_64__) || defined(_M_X64)
// bit_softmax_rows_avx512<R> on the VPOPCNTDQ path, bit_softmax_rows_avx2<R> on AVX2 (attention_head_body's groups).
template <bool VPOP, int R>
inline void bit_softmax_rows(const int32_t* const* ones, int64_t T, int64_t D, float mul, const QuantSpec& sp,
                             uint64_t* const* arow, bool* done) {
  if constexpr (VPOP)
    bit_softmax_rows_avx512<R>(ones, T, D, mul, sp, arow, done);
  else
    bit_softmax_rows_avx2<R>(ones, T, D, mul, sp, arow, done);
}
#endif

#if defined(__x86_64__) || defined(_M_X64)
// Bi-Attention's row bits (bi_attention_bits) 16 keys at a time (AVX-512F) or 8 (AVX2), c ≠ 0, the last T mod 16
// (T mod 8) keys by masked loads; each returns T (every key done).
__attribute__((target("avx512f"))) inline int64_t bi_attention_bits_avx512(const int32_t* ones, int64_t T, int64_t D,
                                                                           float c, uint64_t* arow) {
  const __m512i d = _mm512_set1_epi32((int32_t)D);
  int64_t j = 0;
  for (; j + 16 <= T; j += 16) {
    const __m512i twice = _mm512_slli_epi32(_mm512_loadu_si512(ones + j), 1);
    const __mmask16 on = c > 0.0f ? _mm512_cmplt_epi32_mask(twice, d) : _mm512_cmpgt_epi32_mask(twice, d);
    arow[j / 64] |= (uint64_t)on << (j % 64);
  }
  if (j < T) {
    const __mmask16 live = (__mmask16)((1u << (T - j)) - 1);
    const __m512i twice = _mm512_slli_epi32(_mm512_maskz_loadu_epi32(live, ones + j), 1);
    const __mmask16 on = c > 0.0f ? _mm512_mask_cmplt_epi32_mask(live, twice, d)
                                  : _mm512_mask_cmpgt_epi32_mask(live, twice, d);
    arow[j / 64] |= (uint64_t)on << (j % 64);  // (j is a multiple of 16: the tail stays in one word)
  }
  return T;
}

__attribute__((target("avx2"))) inline int64_t bi_attention_bits_avx2(const int32_t* ones, int64_t T, int64_t D, float c,
                                                                      uint64_t* arow) {
  const __m256i d = _mm256_set1_epi32((int32_t)D);
  int64_t j = 0;
  for (; j + 8 <= T; j += 8) {
    const __m256i twice = _mm256_slli_epi32(_mm256_loadu_si256((const __m256i*)(ones + j)), 1);
    const __m256i on = c > 0.0f ? _mm256_cmpgt_epi32(d, twice) : _mm256_cmpgt_epi32(twice, d);
    arow[j / 64] |= (uint64_t)(unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(on)) << (j % 64);
  }
  if (j < T) {
    const __m256i twice = _mm256_slli_epi32(_mm256_maskload_epi32(ones + j, tail_mask_avx2(T - j)), 1);
    const __m256i on = c > 0.0f ? _mm256_cmpgt_epi32(d, twice) : _mm256_cmpgt_epi32(twice, d);
    const unsigned live = (1u << (T - j)) - 1;  // (j is a multiple of 8: the tail stays in one word)
    arow[j / 64] |= (uint64_t)((unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(on)) & live) << (j % 64);
  }
  return T;
}
#endif

// One row of Bi-Attention's weights as bits, from the keys' popcounts: bit j = 1[dot_j·c > 0] with dot_j = D − 2·ones_j,
// as a float row would give it (exact: |dot| ≤ 256 and c is far from underflow), i.e. 2·ones_j < D for c > 0,
// 2·ones_j > D for c < 0, none for c = 0. arow zeroed by the caller.
template <bool AVX, bool VPOP>
inline void bi_attention_bits(const int32_t* ones, int64_t T, int64_t D, float c, uint64_t* arow) {
  if (!(c > 0.0f || c < 0.0f)) return;
  int64_t j = 0;
#if defined(__x86_64__) || defined(_M_X64)
  if constexpr (VPOP)
    j = bi_attention_bits_avx512(ones, T, D, c, arow);
  else if constexpr (AVX)
    j = bi_attention_bits_avx2(ones, T, D, c, arow);
#endif
  for (; j < T; ++j) arow[j / 64] |= (uint64_t)(c > 0.0f ? 2 * ones[j] < D : 2 * ones[j] > D) << (j % 64);
}

// ones[j] = popcount(q XOR k_j) summed over the dw words of a head, j < n (k_j at kb + j·dw): 8 keys per step on
// the VPOPCNTDQ and AVX2 paths when a head is one word.
template <bool AVX, bool VPOP>
inline void key_popcounts(const uint64_t* qi, const uint64_t* kb, int64_t dw, int64_t n, int32_t* ones) {
#if defined(__x86_64__) || defined(_M_X64)
  if (dw == 1) {
    if constexpr (VPOP) return xor_popcounts_avx512(qi[0], kb, n, ones);
    if constexpr (AVX) return xor_popcounts_avx2(qi[0], kb, n, ones);
  }
#endif
  for (int64_t j = 0; j < n; ++j) {
    int32_t c = 0;
    for (int64_t x = 0; x < dw; ++x) c += (int32_t)__builtin_popcountll(qi[x] ^ kb[j * dw + x]);
    ones[j] = c;
  }
}

#if defined(__x86_64__) || defined(_M_X64)
// Integer attention GEMM rows on AVX-512 VNNI (vpdpbusd: four u8 × s8 products added into each int32 lane), for
// 2–8-bit attention operands: out[16c + l] = Σ_g Σ_{b<4} a[4g + b] · B[g][c][l][b] − sub[16c + l] as floats, for
// the 16-lane blocks c < NB (a: u8 [4·groups]; B: s8, `group_stride` bytes per g, 64 per block c; sub: int32 or
// null). The sums are exact integers; attention_head_body uses it only where |every partial sum| < 2^24, so the
// floats equal sgemm's on the same levels bit for bit (any order of an exact float sum gives the same value).
template <int NB>
__attribute__((target("avx512f,avx512bw,avx512vnni"))) inline void vnni_row_blocks(const uint8_t* a, int64_t groups,
                                                                                   const int8_t* b,
                                                                                   int64_t group_stride,
                                                                                   const int32_t* sub, float* out) {
  __m512i acc[NB];
  for (int c = 0; c < NB; ++c) acc[c] = _mm512_setzero_si512();
  for (int64_t g = 0; g < groups; ++g) {
    int32_t word;
    std::memcpy(&word, a + 4 * g, 4);
    const __m512i x = _mm512_set1_epi32(word);
    const int8_t* bg = b + g * group_stride;
    for (int c = 0; c < NB; ++c) acc[c] = _mm512_dpbusd_epi32(acc[c], x, _mm512_loadu_si512(bg + 64 * c));
  }
  for (int c = 0; c < NB; ++c) {
    const __m512i r = sub ? _mm512_sub_epi32(acc[c], _mm512_loadu_si512(sub + 16 * c)) : acc[c];
    _mm512_storeu_ps(out + 16 * c, _mm512_cvtepi32_ps(r));
  }
}

// vnni_row_blocks over `blocks` 16-lane blocks, eight at a time (the accumulators stay in registers).
__attribute__((target("avx512f,avx512bw,avx512vnni"), noinline)) void vnni_row(const uint8_t* a, int64_t groups,
                                                                               const int8_t* b, int64_t group_stride,
                                                                               const int32_t* sub, float* out,
                                                                               int64_t blocks) {
  for (int64_t c0 = 0; c0 < blocks; c0 += 8) {
    const int8_t* bc = b + 64 * c0;
    const int32_t* sc = sub ? sub + 16 * c0 : nullptr;
    float* oc = out + 16 * c0;
    switch (std::min<int64_t>(8, blocks - c0)) {
      case 1: vnni_row_blocks<1>(a, groups, bc, group_stride, sc, oc); break;
      case 2: vnni_row_blocks<2>(a, groups, bc, group_stride, sc, oc); break;
      case 3: vnni_row_blocks<3>(a, groups, bc, group_stride, sc, oc); break;
      case 4: vnni_row_blocks<4>(a, groups, bc, group_stride, sc, oc); break;
      case 5: vnni_row_blocks<5>(a, groups, bc, group_stride, sc, oc); break;
      case 6: vnni_row_blocks<6>(a, groups, bc, group_stride, sc, oc); break;
      case 7: vnni_row_blocks<7>(a, groups, bc, group_stride, sc, oc); break;
      default: vnni_row_blocks<8>(a, groups, bc, group_stride, sc, oc); break;
    }
  }
}

// The integer attention's byte operands: 16 levels at a time as int32 (levels_row_avx2's comparisons and arithmetic,
// 16 wide: the same levels; the integer-valued floats convert exactly), for the kinds levels_fit_byte admits.
__attribute__((target("avx512f,avx512bw"), always_inline)) inline __m512i levels16_avx512(const QuantSpec& s,
                                                                                         const float* x,
                                                                                         const float* sh) {
  __m512 v = _mm512_loadu_ps(x);
  if (sh) v = _mm512_sub_ps(v, _mm512_loadu_ps(sh));
  const __m512 zero = _mm512_setzero_ps();
  const __m512i one = _mm512_set1_epi32(1), minus_one = _mm512_set1_epi32(-1);
  switch (s.kind) {
    case QK_SIGN: return _mm512_mask_blend_epi32(_mm512_cmp_ps_mask(v, zero, _CMP_GE_OQ), minus_one, one);
    case QK_SIGN_UNSIGNED: return _mm512_maskz_mov_epi32(_mm512_cmp_ps_mask(v, _mm512_set1_ps(0.5f), _CMP_GE_OQ), one);
    case QK_ELASTIC_SIGN:
      return _mm512_mask_blend_epi32(_mm512_cmp_ps_mask(_mm512_div_ps(v, _mm512_set1_ps(s.step)), zero, _CMP_GE_OQ),
                                     minus_one, one);
    default:
      return _mm512_cvtps_epi32(_mm512_roundscale_ps(
          _mm512_min_ps(_mm512_max_ps(_mm512_div_ps(v, _mm512_set1_ps(s.step)), _mm512_set1_ps(s.qn)),
                        _mm512_set1_ps(s.qp)),
          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
}

// out[j] = level(x[j]) + add for j < n, add for n ≤ j < padded (Q: add 128; the probabilities: 0).
__attribute__((target("avx512f,avx512bw"), noinline)) void level_bytes_avx512(const QuantSpec& s, const float* x,
                                                                              const float* sh, int64_t n,
                                                                              int64_t padded, int32_t add,
                                                                              uint8_t* out) {
  const __m512i va = _mm512_set1_epi32(add);
  int64_t j = 0;
  for (; j + 16 <= n; j += 16)
    _mm_storeu_si128((__m128i*)(out + j),
                     _mm512_cvtepi32_epi8(_mm512_add_epi32(levels16_avx512(s, x + j, sh ? sh + j : nullptr), va)));
  for (; j < n; ++j) out[j] = (uint8_t)((int32_t)s.level(x[j], sh, j) + add);
  for (; j < padded; ++j) out[j] = (uint8_t)add;
}

// Key t's levels (n of them) as s8 into K's operand layout [Dp/4 × Tp × 4]: dims 4g … 4g+3 in the word at
// dst + g·stride (the words zeroed by the caller); returns the levels' sum.
__attribute__((target("avx512f,avx512bw"), noinline)) int32_t key_level_bytes_avx512(const QuantSpec& s,
                                                                                     const float* x,
                                                                                     const float* sh, int64_t n,
                                                                                     int32_t* dst, int64_t stride) {
  __m512i sum = _mm512_setzero_si512();
  alignas(16) int32_t words[4];
  int64_t d = 0;
  for (; d + 16 <= n; d += 16) {
    const __m512i l = levels16_avx512(s, x + d, sh ? sh + d : nullptr);
    sum = _mm512_add_epi32(sum, l);
    _mm_store_si128((__m128i*)words, _mm512_cvtepi32_epi8(l));
    for (int b = 0; b < 4; ++b) dst[(d / 4 + b) * stride] = words[b];
  }
  int32_t total = _mm512_reduce_add_epi32(sum);
  for (; d < n; ++d) {
    const int32_t l = (int32_t)s.level(x[d], sh, d);
    reinterpret_cast<int8_t*>(dst + (d / 4) * stride)[d % 4] = (int8_t)l;
    total += l;
  }
  return total;
}

// Value rows t0 … t0 + 3 (x[r]: row t0 + r, null past the last token; D values each) as s8 into V's operand layout
// [Tp/4 × Dp × 4]: dim d of row t0 + r is byte r of dst[d].
__attribute__((target("avx512f,avx512bw"), noinline)) void value_level_bytes_avx512(const QuantSpec& s,
                                                                                   const float* const* x,
                                                                                   const float* sh, int64_t D,
                                                                                   int32_t* dst) {
  const __m512i low = _mm512_set1_epi32(0xFF);
  int64_t d = 0;
  for (; d + 16 <= D; d += 16) {
    __m512i w = _mm512_setzero_si512();
    for (int r = 0; r < 4; ++r)
      if (x[r])
        w = _mm512_or_si512(
            w, _mm512_slli_epi32(_mm512_and_si512(levels16_avx512(s, x[r] + d, sh ? sh + d : nullptr), low), 8 * r));
    _mm512_storeu_si512(dst + d, w);
  }
  for (; d < D; ++d) {
    uint32_t w = 0;
    for (int r = 0; r < 4; ++r)
      if (x[r]) w |= ((uint32_t)(int32_t)s.level(x[r][d], sh, d) & 0xFFu) << (8 * r);
    dst[d] = (int32_t)w;
  }
}
#endif

// Whether an attention operand's levels fit a signed byte (Q, K, V) or an unsigned one (the probabilities), and their
// largest magnitude (`mag`): the integer attention's operands (attention_head_body).
inline bool levels_fit_byte(const QuantSpec& s, bool is_unsigned, float& mag) {
  if (s.kind == QK_LEVELS) {
    mag = std::max(std::fabs(s.qn), std::fabs(s.qp));
    return is_unsigned ? s.qn >= 0.0f && s.qp <= 255.0f : s.qn >= -128.0f && s.qp <= 127.0f;
  }
  mag = 1.0f;
  return is_unsigned ? s.kind == QK_SIGN_UNSIGNED : s.kind == QK_SIGN || s.kind == QK_ELASTIC_SIGN || s.kind == QK_SIGN_UNSIGNED;
}

// Per-thread work space of one (sequence, head) of attention, in floats: see attention_head_body.
int64_t attention_work_floats(int64_t T, int64_t D) {
  const int64_t Tp = round_up(T, 16), Dp = round_up(D, 16), dw = (D + 63) / 64, tw = (T + 63) / 64;
  const int64_t words = 2 * Tp * dw + Dp * tw + 4 * tw;  // the bit rows (uint64, two floats each)
  return round_up(3 * Tp * Dp + 2 * Tp * Tp + 2 * words, 16);
}

// One sequence (T tokens), one head: ctx[t, h·D : (h+1)·D] for t < T. v and ctx rows have stride ld (= heads·D),
// q and k rows heads·D_qk (D_qk ≤ D: the work buffers sized for D hold them; padding stays zero).
template <bool AVX, bool VPOP = false>
__attribute__((always_inline)) inline void attention_head_body(const int64_t* L, const float* q, const float* k,
                                                               const float* v, float* ctx, int64_t T, int64_t h,
                                                               int64_t ld, float* work, const QkvBits& qkv) {
  const int64_t D = L[F_HEAD_DIM], Dq = L[F_QK_HEAD_DIM], ldq = L[F_HEADS] * Dq, attn = L[F_ATTN];
  const QuantSpec sq = quant_spec(L + F_QUANT), sk = quant_spec(L + F_QUANT + kQuantWords),
                  sv = quant_spec(L + F_QUANT + 2 * kQuantWords), sp = quant_spec(L + F_QUANT + 3 * kQuantWords);
  const float scaling = as_float(L[F_SCALING]);
  const int64_t Tp = round_up(T, 16), Dp = round_up(D, 16), dw = (D + 63) / 64, tw = (T + 63) / 64;
  const int64_t dq = (Dq + 63) / 64;  // words of a Q or K bit row (≤ dw)
  float* S = work;                 // scores / probabilities [Tp × Tp]
  float* P = S + Tp * Tp;          // probability levels [Tp × Tp]
  float* Qf = P + Tp * Tp;         // Q levels [Tp × Dp] (and the output of P·V)
  float* Kt = Qf + Tp * Dp;        // K levels transposed [Dp × Tp]
  float* Vf = Kt + Dp * Tp;        // V levels [Tp × Dp]
  uint64_t* qb = reinterpret_cast<uint64_t*>(Vf + Tp * Dp);  // Q bits [T × dq], K bits, V⁺ transposed [tw × Dp]
  uint64_t* kb = qb + Tp * dq;      // (Q and K bits in the first 2·Tp·dq of their 2·Tp·dw words)
  uint64_t* vt = qb + 2 * Tp * dw;
  uint64_t* arows = vt + Dp * tw;  // rows of probability bits [4 × tw] (a group of BiT rows; one row on other paths)
  const float* shq = sq.shift ? sq.shift + h * Dq : nullptr;
  const float* shk = sk.shift ? sk.shift + h * Dq : nullptr;
  const float* shv = sv.shift ? sv.shift + h * D : nullptr;
  const bool bit_scores = sq.one_bit_signed() && sk.one_bit_signed();
  const bool bit_probs = attn == ATTN_BI || sp.one_bit_unsigned();
  const bool bit_values = sv.one_bit_signed() && bit_probs;
  // 1-bit attention: each row's bits straight from the keys' popcounts (Bi-Attention: an integer compare on every path,
  // bi_attention_bits; BiT with one word per head on the AVX2 and VPOPCNTDQ paths: per distinct score,
  // bit_softmax_rows_avx2 / _avx512, rows in groups)
  const bool per_value = bit_scores && bit_values && (attn == ATTN_BI || ((VPOP || AVX) && dq == 1));
  const float c = as_float(L[F_BI_SCALE]), qk = sq.scale() * sk.scale() * scaling;
  const float pv = (attn == ATTN_BI ? 1.0f : sp.scale()) * sv.scale();
  // integer attention (AVX-512 VNNI, vnni_row) for Q·Kᵀ and P·V when the levels fit bytes and every partial sum of
  // the sgemm it replaces is an exact float (< 2^24): the same values, bit for bit
  [[maybe_unused]] bool int_qk = false;  // (read on x86-64 only)
  bool int_pv = false;
#if defined(__x86_64__) || defined(_M_X64)
  if constexpr (VPOP) {
    float mq = 0, mk = 0, mp = 0, mv = 0;
    int_qk = kFeatures.vnni && !bit_scores && levels_fit_byte(sq, false, mq) && levels_fit_byte(sk, false, mk) &&
             (double)Dp * mq * mk < 16777216.0;
    int_pv = kFeatures.vnni && !bit_values && attn != ATTN_BI && levels_fit_byte(sp, true, mp) &&
             levels_fit_byte(sv, false, mv) && (double)Tp * mp * mv < 16777216.0;
  }
#endif

  // scores S[i][j]: the integer dot products of the levels (XNOR-popcount for 1-bit Q and K)
  if (bit_scores) {
    std::memset(qb, 0, (size_t)(2 * Tp * dq) * 8);
    for (int64_t t = 0; t < T; ++t) {
      if (qkv.q) {  // the Linears' epilogues packed them already (same bits)
        head_bits(qkv.q + t * qkv.words, h * Dq, Dq, qb + t * dq);
        head_bits(qkv.k + t * qkv.words, h * Dq, Dq, kb + t * dq);
      } else {
        bits_row<AVX>(sq, q + t * ldq + h * Dq, shq, Dq, qb + t * dq);
        bits_row<AVX>(sk, k + t * ldq + h * Dq, shk, Dq, kb + t * dq);
      }
    }
    for (int64_t i = 0; i < T && !per_value; ++i) {  // (per_value: row by row below)
      float* row = S + i * Tp;
      const uint64_t* qi = qb + i * dq;
      int32_t ones[256];  // popcounts first, then one vectorizable conversion loop per stretch of keys
      for (int64_t j0 = 0; j0 < T; j0 += 256) {
        const int64_t n = std::min<int64_t>(256, T - j0);
        key_popcounts<AVX, VPOP>(qi, kb + j0 * dq, dq, n, ones);
        for (int64_t j = 0; j < n; ++j) row[j0 + j] = (float)((int32_t)Dq - 2 * ones[j]);
      }
    }
#if defined(__x86_64__) || defined(_M_X64)
  } else if (int_qk) {  // Q levels + 128 as u8 [Tp × Dp]; K levels as s8 [Dp/4 × Tp × 4] (vpdpbusd's operand order)
    uint8_t* qu = reinterpret_cast<uint8_t*>(Qf);
    int8_t* kp = reinterpret_cast<int8_t*>(Kt);
    int32_t* ksub = reinterpret_cast<int32_t*>(kp + Tp * Dp);  // 128·Σ_d k_jd: Σ_d (q + 128)·k − 128·Σ_d k = Σ_d q·k
    std::memset(kp, 0, (size_t)(Tp * Dp));
    for (int64_t t = 0; t < T; ++t) {
      level_bytes_avx512(sq, q + t * ldq + h * Dq, shq, Dq, Dp, 128, qu + t * Dp);
      ksub[t] = 128 * key_level_bytes_avx512(sk, k + t * ldq + h * Dq, shk, Dq, reinterpret_cast<int32_t*>(kp) + t, Tp);
    }
    for (int64_t t = T; t < Tp; ++t) ksub[t] = 0;
    std::memset(S + T * Tp, 0, (size_t)((Tp - T) * Tp) * 4);  // (as sgemm leaves them: float P·V reads whole rows)
    for (int64_t i = 0; i < T; ++i) vnni_row(qu + i * Dp, Dp / 4, kp, Tp * 4, ksub, S + i * Tp, Tp / 16);
#endif
  } else {
    std::memset(Qf, 0, (size_t)(Tp * Dp + Dp * Tp) * 4);
    float* tmp = Vf;  // one row of K levels, before V is quantized
    const bool copy_q = sq.kind == QK_FLOAT && !shq, copy_k = sk.kind == QK_FLOAT && !shk;  // levels = values
    for (int64_t t = 0; t < T; ++t) {  // (columns Dq … Dp − 1 of Qf and rows of Kt stay zero)
      if (copy_q)
        std::memcpy(Qf + t * Dp, q + t * ldq + h * Dq, (size_t)Dq * 4);
      else
        levels_row<AVX>(sq, q + t * ldq + h * Dq, shq, Dq, Qf + t * Dp);
      const float* kl = k + t * ldq + h * Dq;
      if (!copy_k) {
        levels_row<AVX>(sk, kl, shk, Dq, tmp);
        kl = tmp;
      }
      for (int64_t d = 0; d < Dq; ++d) Kt[d * Tp + t] = kl[d];
    }
    sgemm(Tp, Tp, Dp, Qf, Dp, Kt, Tp, S, Tp);
  }
  // S is zero outside its T × T corner here (zero-padded Q rows and K columns), so float probabilities can stay in
  // S for the P·V GEMM (no copy into P)
  const bool probs_in_s = !bit_scores && attn != ATTN_BI && sp.kind == QK_FLOAT;

  // the values: V⁺ bits transposed (keys along the words) for A·V by AND-popcount, or levels
  if (bit_values) {  // per 64 keys × 64 dimensions: the keys' bit words, transposed as a 64 × 64 bit matrix
    for (int64_t t0 = 0; t0 < T; t0 += 64) {
      uint64_t rows[4][64] = {};  // [dimension word][key − t0], D ≤ 256 (runtime.py checks)
      for (int64_t t = t0; t < std::min(T, t0 + 64); ++t) {
        uint64_t dst[4] = {0, 0, 0, 0};
        if (qkv.v)
          head_bits(qkv.v + t * qkv.words, h * D, D, dst);
        else
          bits_row<AVX>(sv, v + t * ld + h * D, shv, D, dst);
        for (int64_t g = 0; g < dw; ++g) rows[g][t - t0] = dst[g];
      }
      for (int64_t g = 0; g < dw; ++g) {
        transpose64(rows[g]);  // rows[g][d'] bit t − t0 = bit d' of key t's word g
        for (int64_t d = g * 64; d < std::min(D, g * 64 + 64); ++d) vt[(t0 / 64) * Dp + d] = rows[g][d - g * 64];
      }
    }
#if defined(__x86_64__) || defined(_M_X64)
  } else if (int_pv) {  // V levels as s8 [Tp/4 × Dp × 4], four keys per word
    int32_t* vp = reinterpret_cast<int32_t*>(Vf);
    std::memset(vp, 0, (size_t)(Tp * Dp));
    for (int64_t t0 = 0; t0 < T; t0 += 4) {
      const float* rows[4] = {};
      for (int64_t r = 0; r < 4 && t0 + r < T; ++r) rows[r] = v + (t0 + r) * ld + h * D;
      value_level_bytes_avx512(sv, rows, shv, D, vp + (t0 / 4) * Dp);
    }
#endif
  } else {
    std::memset(Vf, 0, (size_t)(Tp * Dp) * 4);
    for (int64_t t = 0; t < T; ++t) {
      if (sv.kind == QK_FLOAT && !shv)
        std::memcpy(Vf + t * Dp, v + t * ld + h * D, (size_t)D * 4);
      else
        levels_row<AVX>(sv, v + t * ld + h * D, shv, D, Vf + t * Dp);
    }
  }

  // weights per query row: Bi-Attention's 1[dot·c > 0] (c = s_q·s_k·scaling, as attention.py computes it), or the
  // softmax of dot·(s_q·s_k·scaling) and the probability quantizer; then the output row
  [[maybe_unused]] bool group_done[4] = {false, false, false, false};  // (read on x86-64 only)
  for (int64_t i = 0; i < T; ++i) {
    float* row = S + i * Tp;
    bool bits_done = false;  // arow holds the row's bits (per_value)
    uint64_t* arow = arows;  // this row's bits (one of a group's for BiT's per-value rows)
    if (per_value) {
      int32_t* ones = reinterpret_cast<int32_t*>(P + i * Tp);  // (P is not used on this path)
      if (attn == ATTN_BI) {
        key_popcounts<AVX, VPOP>(qb + i * dq, kb, dq, T, ones);
        std::memset(arow, 0, (size_t)tw * 8);
        bi_attention_bits<AVX, VPOP>(ones, T, Dq, c, arow);
        bits_done = true;
      } else {  // BiT (per_value: the AVX2 and VPOPCNTDQ paths only): rows in groups of 4, their bits at once
#if defined(__x86_64__) || defined(_M_X64)
        if constexpr (AVX) {
          constexpr int64_t G = 4;
          const int64_t g = i % G;
          if (g == 0) {
            const int64_t rows = std::min<int64_t>(G, T - i);
            int32_t* os[G];
            uint64_t* ar[G];
            for (int64_t r = 0; r < rows; ++r) {
              os[r] = reinterpret_cast<int32_t*>(P + (i + r) * Tp);
              ar[r] = arows + r * tw;
              key_popcounts<AVX, VPOP>(qb + (i + r) * dq, kb, dq, T, os[r]);
            }
            if (rows == G)
              bit_softmax_rows<VPOP, G>(os, T, Dq, qk, sp, ar, group_done);
            else  // the last rows of the sequence, one at a time
              for (int64_t r = 0; r < rows; ++r)
                bit_softmax_rows<VPOP, 1>(os + r, T, Dq, qk, sp, ar + r, group_done + r);
          }
          arow = arows + g * tw;
          bits_done = group_done[g];
        }
#endif
        if (!bits_done)
          for (int64_t j = 0; j < T; ++j) row[j] = (float)((int32_t)Dq - 2 * ones[j]);  // the per-key path below
      }
    }
    if (!bits_done) {  // (Bi-Attention always has its bits by now: runtime.py admits it with 1-bit Q, K, V only)
#if defined(__x86_64__) || defined(_M_X64)
      if constexpr (VPOP)
        scaled_softmax_avx512(row, T, qk);
      else
#endif
        scaled_softmax<AVX>(row, T, qk);
    }
    if (bit_values) {
      if (!bits_done) {
        std::memset(arow, 0, (size_t)tw * 8);
        bits_row<AVX>(sp, row, nullptr, T, arow);
      }
      int64_t selected = 0;  // keys whose bit is set
      for (int64_t w = 0; w < tw; ++w) selected += __builtin_popcountll(arow[w]);
      alignas(32) float local[256];  // the row when it is packed (context_row / context_out)
      // Σ_j A_ij V̂_jd = 2·popcount(A_i AND V⁺_d) − popcount(A_i)
#if defined(__x86_64__) || defined(_M_X64)
      if constexpr (VPOP) {
        if (qkv.out && D % 16 == 0) {
          const PackTarget& p = *qkv.out;
          context_bits_avx512(arow, tw, vt, Dp, D, (int32_t)selected, pv, p.shift ? p.shift + h * D : nullptr, p.s,
                              p.thr, p.mode, ld, p.bits + i * p.ld + h * D / 8);
          continue;
        }
      } else if constexpr (AVX) {
        if (qkv.out && D % 8 == 0) {
          const PackTarget& p = *qkv.out;
          context_bits_avx2(arow, tw, vt, Dp, D, (int32_t)selected, pv, p.shift ? p.shift + h * D : nullptr, p.s,
                            p.thr, p.mode, ld, p.bits + i * p.ld + h * D / 8);
          continue;
        }
      }
#endif
      float* o = context_row(qkv, local, ctx, i, h, D, ld);
      int32_t agree[256];  // D ≤ 256
#if defined(__x86_64__) || defined(_M_X64)
      if constexpr (VPOP)
        and_popcounts_avx512(arow, tw, vt, Dp, D, agree);
      else if constexpr (AVX)
        and_popcounts_avx2(arow, tw, vt, Dp, D, agree);
      else
#endif
        for (int64_t d = 0; d < D; ++d) {
          int64_t a = 0;
          for (int64_t w = 0; w < tw; ++w) a += __builtin_popcountll(arow[w] & vt[w * Dp + d]);
          agree[d] = (int32_t)a;
        }
#if defined(__x86_64__) || defined(_M_X64)
      if constexpr (AVX)
        context_row_avx2(agree, D, (int32_t)selected, pv, o);
      else
#endif
        for (int64_t d = 0; d < D; ++d) o[d] = pv * (float)(2 * agree[d] - (int32_t)selected);
      context_out(qkv, o, i, h, D, ld);
#if defined(__x86_64__) || defined(_M_X64)
    } else if (int_pv) {  // the row's probability levels as u8, then its context row
      uint8_t* pu = reinterpret_cast<uint8_t*>(P) + i * Tp;
      level_bytes_avx512(sp, row, nullptr, T, Tp, 0, pu);
      vnni_row(pu, Tp / 4, reinterpret_cast<const int8_t*>(Vf), Dp * 4, nullptr, Qf + i * Dp, Dp / 16);
#endif
    } else if (!probs_in_s) {
      float* prow = P + i * Tp;
      if (sp.kind == QK_FLOAT) {
        std::memcpy(prow, row, (size_t)T * 4);
      } else {
        levels_row<AVX>(sp, row, nullptr, T, prow);
      }
      for (int64_t j = T; j < Tp; ++j) prow[j] = 0.0f;
    }
  }
  if (bit_values) return;
  if (!int_pv) {
    if (!probs_in_s)
      for (int64_t i = T; i < Tp; ++i) std::memset(P + i * Tp, 0, (size_t)Tp * 4);
    sgemm(Tp, Dp, Tp, probs_in_s ? S : P, Tp, Vf, Dp, Qf, Dp);  // Qf reused as the output [Tp × Dp]
  }
  for (int64_t i = 0; i < T; ++i) {
    alignas(32) float local[256];
    float* o = context_row(qkv, local, ctx, i, h, D, ld);
    for (int64_t d = 0; d < D; ++d) o[d] = pv * Qf[i * Dp + d];
    context_out(qkv, o, i, h, D, ld);
  }
}

#if defined(__x86_64__) || defined(_M_X64)
__attribute__((target("avx2,fma,popcnt"))) void attention_head_avx2(const int64_t* L, const float* q, const float* k,
                                                                  const float* v, float* ctx, int64_t T, int64_t h,
                                                                  int64_t ld, float* work, const QkvBits& qkv) {
  attention_head_body<true>(L, q, k, v, ctx, T, h, ld, work, qkv);
}

// The same with the bit loops on AVX-512 VPOPCNTDQ (everything else as attention_head_avx2).
// (BW and VL as well, which every VPOPCNTDQ path requires, so that bit_softmax_rows_avx512 and context_bits_avx512
// are inlined)
__attribute__((target("avx2,fma,popcnt,avx512f,avx512dq,avx512bw,avx512vl,avx512vpopcntdq"))) void
attention_head_avx512(const int64_t* L, const float* q, const float* k, const float* v, float* ctx, int64_t T,
                      int64_t h, int64_t ld, float* work, const QkvBits& qkv) {
  attention_head_body<true, true>(L, q, k, v, ctx, T, h, ld, work, qkv);
}
#endif

void attention_head_portable(const int64_t* L, const float* q, const float* k, const float* v, float* ctx, int64_t T,
                             int64_t h, int64_t ld, float* work, const QkvBits& qkv) {
  attention_head_body<false>(L, q, k, v, ctx, T, h, ld, work, qkv);
}

// Work space of one forward, in floats (see layer_forward); the Python plan allocates it.
int64_t encoder_work_floats(const int64_t* plan, int64_t layers, int64_t M, int64_t max_len, int nthreads) {
  int64_t need = 0;
  for (int64_t l = 0; l < layers; ++l) {
    const int64_t* L = plan + l * kLayerWords;
    const int64_t H = L[F_HIDDEN], HD = L[F_HEADS] * L[F_HEAD_DIM], I = L[F_INTER];
    need = std::max(need, M * (4 * HD + H + I) + nthreads * attention_work_floats(max_len, L[F_HEAD_DIM]));
  }
  return need;
}

void layer_forward(const int64_t* L, float* x, int64_t M, const int64_t* cu, int64_t B, float* work, int nthreads) {
  // the threads of each region: one until the wake-ahead helper runs after an idle wait, then all (WakeAhead)
  auto team = [nthreads] { return WakeAhead::get().team_now(nthreads); };
  const int64_t H = L[F_HIDDEN], heads = L[F_HEADS], D = L[F_HEAD_DIM], HD = heads * D, I = L[F_INTER];
  const int64_t HDq = heads * L[F_QK_HEAD_DIM];  // the width of Q and K rows (≤ HD; their buffers are HD wide)
  float *q = work, *k = q + M * HD, *v = k + M * HD, *ctx = v + M * HD, *x1 = ctx + M * HD, *inter = x1 + M * H;
  float* attn_work = inter + M * I;
  const int64_t* lin = L + F_LINEAR;
  QkvBits qkv{nullptr, nullptr, nullptr, 0};
  const QuantSpec aq = quant_spec(L + F_QUANT), ak = quant_spec(L + F_QUANT + kQuantWords),
                  av = quant_spec(L + F_QUANT + 2 * kQuantWords), ap = quant_spec(L + F_QUANT + 3 * kQuantWords);
  const int64_t qkv_words = bits_words(HD);
  if (lin[L_KIND] == 0 && lin[kLinWords + L_KIND] == 0 && lin[2 * kLinWords + L_KIND] == 0 && aq.one_bit_signed() &&
      ak.one_bit_signed() && av.one_bit_signed() && (L[F_ATTN] == ATTN_BI || ap.one_bit_unsigned()) &&
      HD >= 2 * qkv_words + 2) {
    // the attention reads only the 1-bit levels of Q, K and V: each Linear's epilogue packs them directly (the same
    // comparison as bits_row), into its own float buffer, which is not needed as floats
    float* dst[3] = {q, k, v};
    const QuantSpec* spec[3] = {&aq, &ak, &av};
    const uint64_t* out[3];
    for (int i = 0; i < 3; ++i) {
      uint8_t* bits = reinterpret_cast<uint8_t*>(dst[i]);
      const PackTarget target{bits, qkv_words * 8, reinterpret_cast<int64_t*>(bits + M * qkv_words * 8),
                              spec[i]->shift, spec[i]->step, 0.0f,
                              spec[i]->kind == QK_ELASTIC_SIGN ? (int)SIGNED_SCALED : (int)SIGNED};
      run_linear(lin + i * kLinWords, x, M, dst[i], team(), &target);
      out[i] = reinterpret_cast<const uint64_t*>(bits);
    }
    qkv = QkvBits{out[0], out[1], out[2], qkv_words};
  } else if (same_w1a8_input(lin, lin + kLinWords) && same_w1a8_input(lin, lin + 2 * kLinWords)) {
    W1A8Output outs[3];
    float* dst[3] = {q, k, v};
    for (int i = 0; i < 3; ++i) {
      const int64_t* Li = lin + i * kLinWords;
      outs[i] = W1A8Output{as_ptr<const uint64_t>(Li[L_W]), Li[L_N], as_ptr<const int32_t>(Li[L_WSUM]),
                           as_ptr<const float>(Li[L_ALPHA]), as_ptr<const float>(Li[L_GAMMA]),
                           as_ptr<const float>(Li[L_BIAS]), dst[i], Li[L_N], lut_of(Li),
                           as_ptr<const uint64_t>(Li[L_NIB])};
    }
    run_w1a8_shared(x, M, lin[L_K], lin[L_K], as_ptr<const float>(lin[L_SHIFT]), as_float(lin[L_STEP]), (int)lin[L_QN],
                    (int)lin[L_QP], lin[L_DYNAMIC] != 0, 3, outs, team(), false);
  } else {
    run_linear(lin + 0 * kLinWords, x, M, q, team());
    run_linear(lin + 1 * kLinWords, x, M, k, team());
    run_linear(lin + 2 * kLinWords, x, M, v, team());
  }
  int64_t max_len = 0;
  for (int64_t b = 0; b < B; ++b) max_len = std::max(max_len, cu[b + 1] - cu[b]);
  // (sequence, head) items longest sequence first: the dynamic schedule then ends on the short ones, so the threads
  // finish together (in batch order a mixed batch's longest sequence could come last and leave one thread alone)
  std::vector<int64_t> order(B);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [cu](int64_t a, int64_t b) { return cu[a + 1] - cu[a] > cu[b + 1] - cu[b]; });
  const int64_t per_thread = attention_work_floats(max_len, D);
  // a W1A1 attention output Linear: each head packs its context rows straight into that Linear's input bits (in the
  // inter buffer, free until the FFN), instead of floats in ctx that run_linear would pack again
  const int64_t* Lao = lin + 3 * kLinWords;
  const int64_t kw_ao = bits_words(Lao[L_K]);
  const bool ao_bits = Lao[L_KIND] == 0 && Lao[L_K] == HD && D % 8 == 0 && (int)Lao[L_MODE] != SIGNED_GELU &&
                       M * kw_ao * 8 + M * 8 <= M * I * 4;
  const PackTarget ao_target{reinterpret_cast<uint8_t*>(inter), kw_ao * 8,
                             reinterpret_cast<int64_t*>(reinterpret_cast<uint8_t*>(inter) + M * kw_ao * 8),
                             as_ptr<const float>(Lao[L_SHIFT]), as_float(Lao[L_STEP]), as_float(Lao[L_THR]),
                             (int)Lao[L_MODE]};
  if (ao_bits) std::memset(ao_target.bits, 0, (size_t)(M * kw_ao * 8));  // (the bits past HD stay 0)
#if defined(__x86_64__) || defined(_M_X64)
  const bool avx2 = use_avx2(), vpop = avx2 && vpopcnt_isa(g_isa) && kFeatures.vpopcntdq;
  auto head = vpop ? attention_head_avx512 : attention_head_avx2;
#endif
  const int heads_team = team();
  const bool parallel_heads = heads_team > 1 && B * heads > 1;
  const int cpu0 = parallel_heads ? caller_cpu() : -1;
#pragma omp parallel num_threads(heads_team) if (parallel_heads)
  {
    spread_team(cpu0);
    float* mine = attn_work + (int64_t)omp_get_thread_num() * per_thread;
#pragma omp for schedule(dynamic)
    for (int64_t bh = 0; bh < B * heads; ++bh) {
      const int64_t b = order[bh / heads], h = bh % heads, r0 = cu[b], T = cu[b + 1] - cu[b];
      if (T == 0) continue;
      QkvBits seq = qkv.q ? QkvBits{qkv.q + r0 * qkv.words, qkv.k + r0 * qkv.words, qkv.v + r0 * qkv.words, qkv.words}
                          : qkv;
      PackTarget seq_out = ao_target;  // this sequence's rows of the output bits
      seq_out.bits += r0 * ao_target.ld;
      if (ao_bits) seq.out = &seq_out;
#if defined(__x86_64__) || defined(_M_X64)
      if (avx2)
        head(L, q + r0 * HDq, k + r0 * HDq, v + r0 * HD, ctx + r0 * HD, T, h, HD, mine, seq);
      else
#endif
        attention_head_portable(L, q + r0 * HDq, k + r0 * HDq, v + r0 * HD, ctx + r0 * HD, T, h, HD, mine, seq);
    }
  }
  if (ao_bits) {
    const uint64_t* words = reinterpret_cast<const uint64_t*>(ao_target.bits);
    for (int64_t m = 0; m < M; ++m) {
      int64_t ones = 0;
      for (int64_t w = 0; w < kw_ao; ++w) ones += __builtin_popcountll(words[m * kw_ao + w]);
      ao_target.pop[m] = ones;
    }
    run_w1a1_bits(words, ao_target.pop, M, Lao[L_K], (int)Lao[L_MODE], as_ptr<const uint64_t>(Lao[L_W]), Lao[L_N],
                  as_ptr<const float>(Lao[L_ALPHA]), as_ptr<const float>(Lao[L_GAMMA]), as_float(Lao[L_SCALE]),
                  as_ptr<const float>(Lao[L_BIAS]), x1, Lao[L_N], team(), nullptr, as_ptr<const uint8_t>(Lao[L_NIB]));
  } else {
    run_linear(Lao, ctx, M, x1, team());
  }
  add_layer_norm(x1, x, M, H, as_ptr<const float>(L[F_LN1_W]), as_ptr<const float>(L[F_LN1_B]), as_float(L[F_LN1_EPS]),
                 team());
  const int64_t *Li = lin + 4 * kLinWords, *Lo = lin + 5 * kLinWords;
  const int64_t kw_o = bits_words(Lo[L_K]);
  if (L[F_ACT] == ACT_GELU_FOLDED && Li[L_KIND] == 0 && Lo[L_KIND] == 0 && HD >= 2 * kw_o + 2) {
    // 1-bit in, 1-bit out: the intermediate Linear packs its output (GELU folded into the thresholds) straight
    // into the output Linear's input bits, in the q buffer (free after attention); no float intermediate
    uint8_t* bits = reinterpret_cast<uint8_t*>(q);
    int64_t* pop = reinterpret_cast<int64_t*>(bits + M * kw_o * 8);
    const PackTarget target{bits, kw_o * 8, pop, as_ptr<const float>(Lo[L_SHIFT]), as_float(Lo[L_STEP]),
                            as_float(Lo[L_THR]), (int)Lo[L_MODE]};
    run_linear(Li, x1, M, inter, team(), &target);
    run_w1a1_bits(reinterpret_cast<const uint64_t*>(bits), pop, M, Lo[L_K], (int)Lo[L_MODE],
                  as_ptr<const uint64_t>(Lo[L_W]), Lo[L_N], as_ptr<const float>(Lo[L_ALPHA]),
                  as_ptr<const float>(Lo[L_GAMMA]), as_float(Lo[L_SCALE]), as_ptr<const float>(Lo[L_BIAS]), x, Lo[L_N],
                  team(), nullptr, as_ptr<const uint8_t>(Lo[L_NIB]));
  } else {
    run_linear(Li, x1, M, inter, team());
    if (L[F_ACT] != ACT_GELU_FOLDED) activation((int)L[F_ACT], inter, M * I, team());
    run_linear(Lo, inter, M, x, team());
  }
  add_layer_norm(x, x1, M, H, as_ptr<const float>(L[F_LN2_W]), as_ptr<const float>(L[F_LN2_B]), as_float(L[F_LN2_EPS]),
                 team());
}

// ------------------------------------------------------------------------------------------------------------------
// The embeddings' sum before their LayerNorm, as BertEmbeddings computes it: e = (word + token_type) + position, one
// row per token. A table is float32 [rows, H] (kind 0) or packed 1-bit (kind 1: signs uint8 [rows, ceil(H/8)], bit
// h%8 of byte h/8, 1 = +1; scale α float32 [rows]; offset γ float32 [rows] or null), whose value α·(±1) + γ is the
// eager dequantize's (format.dequantize: α·s, then + γ, in float32). Table words: kind, data, scale, offset, rows.
constexpr int kTableWords = 5;

struct SignTable {  // s[b][i] = ±1: bit i of byte b
  float s[256][8];
  SignTable() {
    for (int b = 0; b < 256; ++b)
      for (int i = 0; i < 8; ++i) s[b][i] = (b >> i) & 1 ? 1.0f : -1.0f;
  }
};

// 1-bit table row expansion, 16 (AVX-512) or 8 (AVX2) features at a time: v = α·(±1) (a blend of α and −α, exact),
// then + γ, then assigned or added to o, the operations of add_table_row's scalar loop in its order (the same
// values); each returns the first feature not done (the caller finishes the row).
#if defined(__x86_64__) || defined(_M_X64)
template <bool ASSIGN>
__attribute__((target("avx512f"))) int64_t table_row_bits_avx512(float* o, const uint8_t* bits, float a,
                                                                 const float* g, int64_t H) {
  const __m512 pos = _mm512_set1_ps(a), neg = _mm512_set1_ps(-a), gv = _mm512_set1_ps(g ? *g : 0.0f);
  int64_t h = 0;
  for (; h + 16 <= H; h += 16) {
    uint16_t m;
    std::memcpy(&m, bits + h / 8, 2);
    __m512 v = _mm512_mask_blend_ps((__mmask16)m, neg, pos);
    if (g) v = _mm512_add_ps(v, gv);
    _mm512_storeu_ps(o + h, ASSIGN ? v : _mm512_add_ps(_mm512_loadu_ps(o + h), v));
  }
  return h;
}

template <bool ASSIGN>
__attribute__((target("avx2"))) int64_t table_row_bits_avx2(float* o, const uint8_t* bits, float a, const float* g,
                                                            int64_t H) {
  const __m256 pos = _mm256_set1_ps(a), neg = _mm256_set1_ps(-a), gv = _mm256_set1_ps(g ? *g : 0.0f);
  const __m256i lane = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  int64_t h = 0;
  for (; h + 8 <= H; h += 8) {
    const __m256i byte = _mm256_set1_epi32(bits[h / 8]);
    const __m256 on = _mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_and_si256(byte, lane), lane));
    __m256 v = _mm256_blendv_ps(neg, pos, on);
    if (g) v = _mm256_add_ps(v, gv);
    _mm256_storeu_ps(o + h, ASSIGN ? v : _mm256_add_ps(_mm256_loadu_ps(o + h), v));
  }
  return h;
}
#endif

// o[h] = value (ASSIGN) or o[h] += value, h < H, of row `row` of table t
template <bool ASSIGN>
inline void add_table_row(float* o, const int64_t* t, int64_t row, int64_t H) {
  if (t[0] == 0) {
    const float* v = as_ptr<const float>(t[1]) + row * H;
    for (int64_t h = 0; h < H; ++h) o[h] = ASSIGN ? v[h] : o[h] + v[h];
    return;
  }
  static const SignTable signs;
  const uint8_t* bits = as_ptr<const uint8_t>(t[1]) + row * ((H + 7) / 8);
  const float a = as_ptr<const float>(t[2])[row];
  const float* g = t[3] ? as_ptr<const float>(t[3]) + row : nullptr;
  int64_t from = 0;
#if defined(__x86_64__) || defined(_M_X64)
  if (use_avx512())
    from = table_row_bits_avx512<ASSIGN>(o, bits, a, g, H);
  else if (use_avx2())
    from = table_row_bits_avx2<ASSIGN>(o, bits, a, g, H);
#endif
  alignas(32) float v[8];
  for (int64_t h0 = from; h0 < H; h0 += 8) {  // (from is a multiple of 8)
    const float* sg = signs.s[bits[h0 >> 3]];
    for (int i = 0; i < 8; ++i) v[i] = a * sg[i];  // α·(±1), exact
    if (g)
      for (int i = 0; i < 8; ++i) v[i] = v[i] + *g;
    const int64_t n = std::min<int64_t>(8, H - h0);
    for (int64_t i = 0; i < n; ++i) o[h0 + i] = ASSIGN ? v[i] : o[h0 + i] + v[i];
  }
}

// out [M, H]; ids [M]; positions [M] (null: row m of a sequence of T tokens has position m % T); types [M] (null:
// 0). Returns −1 (nothing written) when an index is outside its table.
int64_t embeddings_sum(float* out, int64_t M, int64_t H, int64_t T, const int64_t* ids, const int64_t* positions,
                       const int64_t* types, const int64_t* word, const int64_t* pos, const int64_t* type,
                       int nthreads) {
  for (int64_t m = 0; m < M; ++m) {
    const int64_t p = positions ? positions[m] : m % T, t = types ? types[m] : 0;
    if (ids[m] < 0 || ids[m] >= word[4] || p < 0 || p >= pos[4] || t < 0 || t >= type[4]) return -1;
  }
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1 && M * H > (1 << 18))
  for (int64_t m = 0; m < M; ++m) {
    float* o = out + m * H;
    add_table_row<true>(o, word, ids[m], H);
    add_table_row<false>(o, type, types ? types[m] : 0, H);
    add_table_row<false>(o, pos, positions ? positions[m] : m % T, H);
  }
  return 0;
}

// ------------------------------------------------------------------------------------------------------------------
// A small float dense layer y[b, n] = bias[n] + Σ_k W[n, k]·x[b, k] for a few rows (BertPooler's Linear on the first
// tokens): every output is 16 lanes of fused multiply-adds (lane i takes k ≡ i mod 16, k < K − K mod 16, in order),
// the lanes added 0 … 15, then the tail k in order, then the bias: the same operations on AVX-512, AVX2 and the
// portable path (std::fma), so every instruction set gives the same bits. The threads split the outputs n, each
// reading its rows of W once for all B inputs (at batch 1 the layer is a read of W: memory-bound, and one thread's
// stream is half the machine's). x rows at stride ldx floats; y [B, N].
#if defined(__x86_64__) || defined(_M_X64)
__attribute__((target("avx512f"))) void dense_row_avx512(const float* w, const float* x, int64_t K, float* lanes) {
  __m512 acc = _mm512_setzero_ps();
  for (int64_t k = 0; k + 16 <= K; k += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(w + k), _mm512_loadu_ps(x + k), acc);
  _mm512_storeu_ps(lanes, acc);
}

__attribute__((target("avx2,fma"))) void dense_row_avx2(const float* w, const float* x, int64_t K, float* lanes) {
  __m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
  for (int64_t k = 0; k + 16 <= K; k += 16) {
    lo = _mm256_fmadd_ps(_mm256_loadu_ps(w + k), _mm256_loadu_ps(x + k), lo);
    hi = _mm256_fmadd_ps(_mm256_loadu_ps(w + k + 8), _mm256_loadu_ps(x + k + 8), hi);
  }
  _mm256_storeu_ps(lanes, lo);
  _mm256_storeu_ps(lanes + 8, hi);
}
#endif

void dense_row_portable(const float* w, const float* x, int64_t K, float* lanes) {
  for (int i = 0; i < 16; ++i) lanes[i] = 0.0f;
  for (int64_t k = 0; k + 16 <= K; k += 16)
    for (int i = 0; i < 16; ++i) lanes[i] = std::fma(w[k + i], x[k + i], lanes[i]);
}

void dense_rows(const float* x, int64_t B, int64_t ldx, int64_t K, const float* W, int64_t N, const float* bias,
                float* y, int nthreads) {
#if defined(__x86_64__) || defined(_M_X64)
  const int path = use_avx512() ? 2 : use_avx2() ? 1 : 0;
#else
  [[maybe_unused]] const int path = 0;  // (read by the x86-64 branches only)
#endif
  const int64_t body = K - K % 16;
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1 && N * K > (1 << 16))
  for (int64_t n = 0; n < N; ++n) {
    const float* w = W + n * K;
    for (int64_t b = 0; b < B; ++b) {
      const float* xb = x + b * ldx;
      alignas(64) float lanes[16];
#if defined(__x86_64__) || defined(_M_X64)
      if (path == 2)
        dense_row_avx512(w, xb, K, lanes);
      else if (path == 1)
        dense_row_avx2(w, xb, K, lanes);
      else
#endif
        dense_row_portable(w, xb, K, lanes);
      float sum = 0.0f;
      for (int i = 0; i < 16; ++i) sum += lanes[i];
      for (int64_t k = body; k < K; ++k) sum = std::fma(w[k], xb[k], sum);
      y[b * N + n] = sum + (bias ? bias[n] : 0.0f);
    }
  }
}

#ifndef HF_BITGEMM_NO_PYTHON
// dense_rows(x, B, ldx, K, W, N, bias, y, nthreads): float32 pointers as integers (bias 0: none).
PyObject* py_dense_rows(PyObject*, PyObject* args) {
  unsigned long long x, W, bias, y;
  long long B, ldx, K, N;
  int nthreads;
  if (!PyArg_ParseTuple(args, "KLLLKLKKi", &x, &B, &ldx, &K, &W, &N, &bias, &y, &nthreads)) return nullptr;
  Py_BEGIN_ALLOW_THREADS;
  nthreads = WakeAhead::get().team_now(nthreads);
  spread_threads(nthreads);
  dense_rows(ptr<const float>(x), B, ldx, K, ptr<const float>(W), N, ptr<const float>(bias), ptr<float>(y), nthreads);
  Py_END_ALLOW_THREADS;
  Py_RETURN_NONE;
}
#endif

#ifndef HF_BITGEMM_NO_PYTHON
// embeddings_sum(out, M, H, T, ids, positions, types, tables, nthreads): tables int64 [3 × kTableWords] (word,
// position, token type); returns 0, or −1 for an index outside its table.
PyObject* py_embeddings_sum(PyObject*, PyObject* args) {
  unsigned long long out, ids, positions, types, tables;
  long long M, H, T;
  int nthreads;
  if (!PyArg_ParseTuple(args, "KLLLKKKKi", &out, &M, &H, &T, &ids, &positions, &types, &tables, &nthreads))
    return nullptr;
  const int64_t* tb = ptr<const int64_t>(tables);
  int64_t status;
  Py_BEGIN_ALLOW_THREADS;
  // the forward's first native call (docs/inference.md, "Threads after an idle wait"): on this thread when cold
  if (WakeAhead::get().wake(M, nthreads)) nthreads = 1;
  spread_threads(nthreads);
  status = embeddings_sum(ptr<float>(out), M, H, T, ptr<const int64_t>(ids), ptr<const int64_t>(positions),
                          ptr<const int64_t>(types), tb, tb + kTableWords, tb + 2 * kTableWords, nthreads);
  Py_END_ALLOW_THREADS;
  return PyLong_FromLongLong(status);
}
#endif

#ifndef HF_BITGEMM_NO_PYTHON
// encoder_forward(plan, layers, x, M, cu, B, work, work_floats, nthreads): x float32 [M, H] in place.
PyObject* py_encoder_forward(PyObject*, PyObject* args) {
  unsigned long long plan, x, cu, work;
  long long layers, M, B, work_floats;
  int nthreads;
  if (!PyArg_ParseTuple(args, "KLKLKLKLi", &plan, &layers, &x, &M, &cu, &B, &work, &work_floats, &nthreads))
    return nullptr;
  const int64_t* p = ptr<const int64_t>(plan);
  const int64_t* offsets = ptr<const int64_t>(cu);
  int64_t max_len = 0;
  for (int64_t b = 0; b < B; ++b) max_len = std::max(max_len, offsets[b + 1] - offsets[b]);
  if (offsets[0] != 0 || offsets[B] != M) {
    PyErr_SetString(PyExc_ValueError, "encoder_forward: cu_seqlens must start at 0 and end at the number of rows");
    return nullptr;
  }
  const int64_t need = encoder_work_floats(p, layers, M, max_len, nthreads);
  if (work_floats < need) {
    PyErr_Format(PyExc_ValueError, "encoder_forward: work space of %lld floats, %lld needed", work_floats,
                 (long long)need);
    return nullptr;
  }
  Py_BEGIN_ALLOW_THREADS;
  WakeAhead& wake = WakeAhead::get();
  wake.wake(M, nthreads);  // asks nothing when the embeddings' call asked already and the helper still spins (or
                          // the team is warm)
  if (wake.team_now(nthreads) > 1) spread_threads(nthreads);  // (else each region's spread_team, once it has a team)
  for (int64_t l = 0; l < layers; ++l)  // each region on one thread until the helper runs, then on all (team_now)
    layer_forward(p + l * kLayerWords, ptr<float>(x), M, offsets, B, ptr<float>(work), nthreads);
  Py_END_ALLOW_THREADS;
  Py_RETURN_NONE;
}

// team_awake() → bool: false while the forward is cold (WakeAhead::cold: the wake-ahead asked its helper after an
// idle wait and no region has taken the team since); the embeddings module runs its PyTorch LayerNorm on one thread
// while not.
PyObject* py_team_awake(PyObject*, PyObject*) { return PyBool_FromLong(!WakeAhead::get().cold()); }

// team_release(): ends a cold forward (WakeAhead::release) when the native encoder does not follow the embeddings
// (BinaryBertEncoder's eager forward, an embeddings error).
PyObject* py_team_release(PyObject*, PyObject*) {
  WakeAhead::get().release();
  Py_RETURN_NONE;
}

// wake_requests() → int: how many times the wake-ahead has asked its helper in this process (WakeAhead::requests; −1
// where it is compiled out), for the tests: one per forward after an idle wait.
PyObject* py_wake_requests(PyObject*, PyObject*) { return PyLong_FromLongLong(WakeAhead::get().requests()); }

// omp_thread_count(n) → the previous count: the OpenMP thread count (nthreads-var) of the calling thread alone, which
// PyTorch's parallel_for reads (torch.set_num_threads also changes the default that threads starting later take, and
// the pthreadpool's size); without OpenMP, 1 and nothing set.
PyObject* py_omp_thread_count(PyObject*, PyObject* args) {
  int n;
  if (!PyArg_ParseTuple(args, "i", &n)) return nullptr;
  if (n < 1) {
    PyErr_Format(PyExc_ValueError, "omp_thread_count: n must be at least 1, got %d", n);
    return nullptr;
  }
#ifdef _OPENMP
  const int previous = omp_get_max_threads();
  omp_set_num_threads(n);
  return PyLong_FromLong(previous);
#else
  return PyLong_FromLong(1);
#endif
}

PyObject* py_encoder_work_floats(PyObject*, PyObject* args) {
  unsigned long long plan;
  long long layers, M, max_len;
  int nthreads;
  if (!PyArg_ParseTuple(args, "KLLLi", &plan, &layers, &M, &max_len, &nthreads)) return nullptr;
  return PyLong_FromLongLong(encoder_work_floats(ptr<const int64_t>(plan), layers, M, max_len, nthreads));
}

PyObject* py_encoder_layout(PyObject*, PyObject*) {
  return Py_BuildValue("{s:i,s:i,s:i,s:i,s:i}", "layer_words", kLayerWords, "linear_words", kLinWords, "quant_words",
                       kQuantWords, "quant_offset", F_QUANT, "linear_offset", F_LINEAR);
}
#endif  // HF_BITGEMM_NO_PYTHON
