// Training kernels of BiT's 1-bit elastic activation quantizer x̂ = α·sign((x − β)/α), sign(0) = +1 (Liu et al.,
// NeurIPS 2022, eq. 3–5; binarization/activation.py `_ScaledSignSTE` and binarization/linear.py
// `_ScaledSignLinear`): one pass each way instead of the six forward and three backward passes (and their
// temporaries) of the PyTorch composition (kernels/reference.py `scaled_sign_*`, the twins these are tested
// against). Same float32 operations as there, so x̂ and ∂x are equal bit for bit; ∂α's sum is accumulated in
// float64 per fixed chunk, chunks added in order (the same result for any thread count).
//
//   forward:   u = (x − β)/α (two roundings; x/α without β), x̂ = u ≥ 0 ? α : −α,
//              code = 1[u ≥ 0] | 1[|u| ≤ 1] << 1 (uint8: the sign and the STE window, all the backward pass needs)
//   levels:    x̂ again from the codes
//   backward:  ∂x = g·1[|u| ≤ 1] (as g·1.0 or g·0.0), ∂α = Σ g·sign(u)
//
// x is read through a 4-D strided view (Q/K/V arrive as transposed views [B, H, T, d] of [B, T, H, d]; β broadcast
// with stride 0); x̂ and the codes are written contiguous in x's logical order.

constexpr int64_t kSignChunk = 1 << 15;  // elements per chunk of the contiguous kernels
// (HF_ELEMENTWISE, kLanes, kLaneBlock: quantized_probs.h)

struct Strided4 {
  int64_t size[4], x[4], shift[4];  // sizes, and strides of x and β (in elements)
};

inline uint8_t sign_code(float u) {  // 1[u ≥ 0] | 1[|u| ≤ 1] << 1 (NaN: 0)
  return (uint8_t)((u >= 0.0f ? 1 : 0) | (std::fabs(u) <= 1.0f ? 2 : 0));
}

// One row of n elements; x and β with strides sx, sb along it (kUnit: both 1, the loop the compiler vectorizes;
// β absent: kShift false).
template <bool kShift, bool kUnit>
HF_ELEMENTWISE void scaled_sign_row(const float* __restrict x, const float* __restrict shift, int64_t n, int64_t sx,
                                    int64_t sb, float alpha, float* __restrict out, uint8_t* __restrict codes) {
  if (kUnit) sx = sb = 1;
  for (int64_t j = 0; j < n; ++j) {
    const float u = kShift ? (x[j * sx] - shift[j * sb]) / alpha : x[j * sx] / alpha;
    out[j] = u >= 0.0f ? alpha : -alpha;
    codes[j] = sign_code(u);
  }
}

void scaled_sign_forward(const float* x, const float* shift, const Strided4& v, float alpha, float* out,
                         uint8_t* codes, int nthreads) {
  const int64_t rows = v.size[0] * v.size[1] * v.size[2], n3 = v.size[3];
  const bool unit = v.x[3] == 1 && (!shift || v.shift[3] == 1);
  void (*row)(const float*, const float*, int64_t, int64_t, int64_t, float, float*, uint8_t*) =
      shift ? (unit ? scaled_sign_row<true, true> : scaled_sign_row<true, false>)
            : (unit ? scaled_sign_row<false, true> : scaled_sign_row<false, false>);
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1 && rows * n3 > kSignChunk)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t i2 = r % v.size[2], i1 = (r / v.size[2]) % v.size[1], i0 = r / (v.size[2] * v.size[1]);
    const float* xr = x + i0 * v.x[0] + i1 * v.x[1] + i2 * v.x[2];
    const float* br = shift ? shift + i0 * v.shift[0] + i1 * v.shift[1] + i2 * v.shift[2] : nullptr;
    row(xr, br, n3, v.x[3], v.shift[3], alpha, out + r * n3, codes + r * n3);
  }
}

HF_ELEMENTWISE void scaled_sign_levels_range(const uint8_t* __restrict codes, int64_t lo, int64_t hi, float alpha,
                                             float* __restrict out) {
  for (int64_t i = lo; i < hi; ++i) out[i] = (codes[i] & 1) ? alpha : -alpha;
}

void scaled_sign_levels(const uint8_t* codes, int64_t n, float alpha, float* out, int nthreads) {
  const int64_t chunks = (n + kSignChunk - 1) / kSignChunk;
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1 && chunks > 1)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t lo = c * kSignChunk, hi = std::min(n, lo + kSignChunk);
    scaled_sign_levels_range(codes, lo, hi, alpha, out);
  }
}

// One element of the backward pass: writes ∂x = g·1[window] (as g·1.0 or g·0.0) and returns g·sign(u).
inline float scaled_sign_backward_one(const float* grad, const uint8_t* __restrict codes, int64_t i,
                                      float* grad_x) {
  const float g = grad[i];
  const int code = codes[i];
  grad_x[i] = (float)((code >> 1) & 1) * g;
  return (float)((code & 1) * 2 - 1) * g;
}

// One block of the backward pass; returns its Σ g·sign(u) in 16 float lanes, added in double. kInPlace: ∂x
// overwrites grad (grad_x == grad; the same pointer, so the loops still vectorize).
template <bool kInPlace>
HF_ELEMENTWISE double scaled_sign_backward_block(const float* grad, const uint8_t* __restrict codes, int64_t lo,
                                                 int64_t hi, float* out) {
  float* grad_x = kInPlace ? const_cast<float*>(grad) : out;
  float lanes[kLanes] = {};
  int64_t i = lo;
  for (; i + kLanes <= hi; i += kLanes)
    for (int j = 0; j < kLanes; ++j) lanes[j] += scaled_sign_backward_one(grad, codes, i + j, grad_x);
  for (int j = 0; i + j < hi; ++j) lanes[j] += scaled_sign_backward_one(grad, codes, i + j, grad_x);  // the tail
  double sum = 0.0;
  for (int j = 0; j < kLanes; ++j) sum += (double)lanes[j];
  return sum;
}

// grad_x [n] (may be grad itself) = grad·1[window]; returns Σ grad·sign(u).
double scaled_sign_backward(const float* grad, const uint8_t* codes, int64_t n, float* grad_x, int nthreads) {
  const int64_t blocks = (n + kLaneBlock - 1) / kLaneBlock;
  std::vector<double> partial(blocks, 0.0);
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1 && n > kSignChunk)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t lo = b * kLaneBlock, hi = std::min(n, lo + kLaneBlock);
    partial[b] = grad_x == grad ? scaled_sign_backward_block<true>(grad, codes, lo, hi, grad_x)
                                : scaled_sign_backward_block<false>(grad, codes, lo, hi, grad_x);
  }
  return std::accumulate(partial.begin(), partial.end(), 0.0);
}
