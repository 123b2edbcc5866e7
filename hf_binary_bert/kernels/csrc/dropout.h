// Dropout's kept mask for training (binarization/dropout.py `dropout_kept`): kept[i] = 1[u_i < t] with u_i the i-th
// 32-bit output of the counter-based generator Philox4x32-10 (Salmon, Moraes, Dror, Shaw, "Parallel random numbers:
// as easy as 1, 2, 3", SC 2011; the generator of PyTorch's CUDA and JAX's random bits) under a 64-bit key, and
// t = the keep probability × 2³² (rounded down). Output i is word i mod 4 of the block of counter ⌊i/4⌋ (a 64-bit
// counter in words 0–1, words 2–3 zero), so every element depends on (key, i) only: the same mask for any thread
// count and instruction set, and the pure-PyTorch twin (kernels/reference.py `dropout_kept`) computes it bit for bit.
// ATen's CPU `bernoulli_` draws one Mersenne-Twister (or MKL stream) number per element at about 6 ns.
//
// The rounds run on 16 counters at once, written out per instruction set (AVX-512F, AVX2, portable C++): the
// 32 × 32 → 64-bit products of a round are `vpmuludq` on the even and the odd 32-bit lanes. Explicit intrinsics
// rather than a loop left to the vectorizer: GCC 12 vectorized the same plain loop in one build and left it scalar
// (2.3 × slower) in another after an unrelated edit. Every variant is checked against Random123's known answers
// (tests/native/test_kernels_main.cpp, `philox4x32_10_x16` under each instruction set this CPU runs).

constexpr uint32_t kPhiloxM0 = 0xD2511F53u, kPhiloxM1 = 0xCD9E8D57u;  // round multipliers
constexpr uint32_t kPhiloxW0 = 0x9E3779B9u, kPhiloxW1 = 0xBB67AE85u;  // key schedule (Weyl) increments
constexpr int kPhiloxLanes = 16;                                        // counters per call of the round functions
constexpr int64_t kDropoutChunk = 1 << 16;                              // counters per parallel chunk

// Philox4x32-10 on 16 counters, in place: w[j][l] is word j of lane l's counter on entry and word j of its output
// on return, under the key (k0, k1) (Random123's philox4x32_R(10, ...)). Also sets below[j], bit l = 1[w[j][l] <
// threshold] on the outputs (the mask's bits; 0 when threshold is 0).
inline void philox4x32_10_x16_portable(uint32_t w[4][kPhiloxLanes], uint32_t k0, uint32_t k1, uint32_t threshold,
                                       uint16_t below[4]) {
  for (int l = 0; l < kPhiloxLanes; ++l) {
    uint32_t c0 = w[0][l], c1 = w[1][l], c2 = w[2][l], c3 = w[3][l], a = k0, b = k1;
    for (int r = 0; r < 10; ++r) {
      const uint64_t p0 = (uint64_t)kPhiloxM0 * c0, p1 = (uint64_t)kPhiloxM1 * c2;
      const uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ a, n2 = (uint32_t)(p0 >> 32) ^ c3 ^ b;
      c1 = (uint32_t)p1, c3 = (uint32_t)p0, c0 = n0, c2 = n2;
      a += kPhiloxW0, b += kPhiloxW1;
    }
    w[0][l] = c0, w[1][l] = c1, w[2][l] = c2, w[3][l] = c3;
  }
  for (int j = 0; j < 4; ++j) {
    uint16_t m = 0;
    for (int l = 0; l < kPhiloxLanes; ++l) m |= (uint16_t)((w[j][l] < threshold) << l);
    below[j] = m;
  }
}

#if defined(__x86_64__) || defined(_M_X64)
// One round on 8 lanes (AVX2): hi:lo = M × c for the even lanes (vpmuludq) and the odd lanes (shifted down), then
// the halves blended back into 32-bit lanes.
__attribute__((target("avx2"))) inline void philox_mulhilo_avx2(__m256i c, __m256i m, __m256i& hi, __m256i& lo) {
  const __m256i even = _mm256_mul_epu32(c, m), odd = _mm256_mul_epu32(_mm256_srli_epi64(c, 32), m);
  lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
  hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
}

__attribute__((target("avx2"))) void philox4x32_10_x16_avx2(uint32_t w[4][kPhiloxLanes], uint32_t k0, uint32_t k1,
                                                            uint32_t threshold, uint16_t below[4]) {
  const __m256i m0 = _mm256_set1_epi32((int)kPhiloxM0), m1 = _mm256_set1_epi32((int)kPhiloxM1);
  const __m256i sign = _mm256_set1_epi32((int)0x80000000u), t = _mm256_set1_epi32((int)(threshold ^ 0x80000000u));
  for (int h = 0; h < 2; ++h) {  // lanes 8h … 8h + 7
    __m256i c0 = _mm256_loadu_si256((const __m256i*)(w[0] + 8 * h)),
            c1 = _mm256_loadu_si256((const __m256i*)(w[1] + 8 * h)),
            c2 = _mm256_loadu_si256((const __m256i*)(w[2] + 8 * h)),
            c3 = _mm256_loadu_si256((const __m256i*)(w[3] + 8 * h));
    uint32_t a = k0, b = k1;
    for (int r = 0; r < 10; ++r) {
      __m256i hi0, lo0, hi1, lo1;
      philox_mulhilo_avx2(c0, m0, hi0, lo0);
      philox_mulhilo_avx2(c2, m1, hi1, lo1);
      c0 = _mm256_xor_si256(_mm256_xor_si256(hi1, c1), _mm256_set1_epi32((int)a));
      c2 = _mm256_xor_si256(_mm256_xor_si256(hi0, c3), _mm256_set1_epi32((int)b));
      c1 = lo1, c3 = lo0;
      a += kPhiloxW0, b += kPhiloxW1;
    }
    const __m256i c[4] = {c0, c1, c2, c3};
    for (int j = 0; j < 4; ++j) {
      _mm256_storeu_si256((__m256i*)(w[j] + 8 * h), c[j]);
      // unsigned c < t as signed (c ^ 2³¹) < (t ^ 2³¹)
      const __m256i lt = _mm256_cmpgt_epi32(t, _mm256_xor_si256(c[j], sign));
      const uint16_t bits = (uint16_t)_mm256_movemask_ps(_mm256_castsi256_ps(lt));
      below[j] = h ? (uint16_t)(below[j] | bits << 8) : bits;
    }
  }
}

__attribute__((target("avx512f"))) inline void philox_mulhilo_avx512(__m512i c, __m512i m, __m512i& hi,
                                                                      __m512i& lo) {
  const __m512i even = _mm512_mul_epu32(c, m), odd = _mm512_mul_epu32(_mm512_srli_epi64(c, 32), m);
  lo = _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32));
  hi = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(even, 32), odd);
}

__attribute__((target("avx512f"))) void philox4x32_10_x16_avx512(uint32_t w[4][kPhiloxLanes], uint32_t k0,
                                                                 uint32_t k1, uint32_t threshold, uint16_t below[4]) {
  const __m512i m0 = _mm512_set1_epi32((int)kPhiloxM0), m1 = _mm512_set1_epi32((int)kPhiloxM1);
  __m512i c0 = _mm512_loadu_si512(w[0]), c1 = _mm512_loadu_si512(w[1]), c2 = _mm512_loadu_si512(w[2]),
          c3 = _mm512_loadu_si512(w[3]);
  uint32_t a = k0, b = k1;
  for (int r = 0; r < 10; ++r) {
    __m512i hi0, lo0, hi1, lo1;
    philox_mulhilo_avx512(c0, m0, hi0, lo0);
    philox_mulhilo_avx512(c2, m1, hi1, lo1);
    c0 = _mm512_ternarylogic_epi32(hi1, c1, _mm512_set1_epi32((int)a), 0x96);  // three-way XOR
    c2 = _mm512_ternarylogic_epi32(hi0, c3, _mm512_set1_epi32((int)b), 0x96);
    c1 = lo1, c3 = lo0;
    a += kPhiloxW0, b += kPhiloxW1;
  }
  const __m512i t = _mm512_set1_epi32((int)threshold);
  const __m512i c[4] = {c0, c1, c2, c3};
  for (int j = 0; j < 4; ++j) {
    _mm512_storeu_si512(w[j], c[j]);
    below[j] = (uint16_t)_mm512_cmplt_epu32_mask(c[j], t);
  }
}
#endif

// Philox4x32-10 on 16 counters under instruction set `isa` (the ones above; NEON and anything else: portable).
inline void philox4x32_10_x16(int isa, uint32_t w[4][kPhiloxLanes], uint32_t k0, uint32_t k1, uint32_t threshold,
                              uint16_t below[4]) {
#if defined(__x86_64__) || defined(_M_X64)
  const bool avx512 = isa == AVX512 || vpopcnt_isa(isa) || isa == AVX512_VPOPCNT_EMULATED;
  if (avx512 && kFeatures.avx512bw) return philox4x32_10_x16_avx512(w, k0, k1, threshold, below);
  if ((avx512 || isa == AVX2) && kFeatures.avx2) return philox4x32_10_x16_avx2(w, k0, k1, threshold, below);
#endif
  (void)isa;
  philox4x32_10_x16_portable(w, k0, k1, threshold, below);
}

// Bits 0 … 15 of m moved to bits 0, 4, 8, …, 60.
inline uint64_t spread_bits_by_4(uint64_t m) {
  m = (m | m << 24) & 0x000000FF000000FFull;
  m = (m | m << 12) & 0x000F000F000F000Full;
  m = (m | m << 6) & 0x0303030303030303ull;
  return (m | m << 3) & 0x1111111111111111ull;
}

// Counters [lo, hi): elements 4·lo … 4·hi − 1, of which those below n are written (element 4c + j is word j of
// counter c: bit 4l + j of the block's 64-bit mask, expanded to one byte per bit).
inline void dropout_kept_range(int isa, uint64_t key, int64_t lo, int64_t hi, int64_t n, uint32_t threshold,
                               uint8_t* __restrict kept) {
  for (int64_t base = lo; base < hi; base += kPhiloxLanes) {
    uint32_t w[4][kPhiloxLanes];
    for (int l = 0; l < kPhiloxLanes; ++l) {
      const uint64_t c = (uint64_t)(base + l);
      w[0][l] = (uint32_t)c, w[1][l] = (uint32_t)(c >> 32), w[2][l] = 0, w[3][l] = 0;
    }
    uint16_t below[4];
    philox4x32_10_x16(isa, w, (uint32_t)key, (uint32_t)(key >> 32), threshold, below);
    const uint64_t bits = spread_bits_by_4(below[0]) | spread_bits_by_4(below[1]) << 1 |
                          spread_bits_by_4(below[2]) << 2 | spread_bits_by_4(below[3]) << 3;
    uint8_t block[4 * kPhiloxLanes];
    for (int b = 0; b < 8; ++b) {  // byte b of `bits` → block[8b … 8b + 7] (0 / 1 each)
      const uint64_t spread = ((bits >> 8 * b) & 0xFF) * 0x0101010101010101ull & 0x8040201008040201ull;
      const uint64_t bytes = ((spread + 0x7F7F7F7F7F7F7F7Full) >> 7) & 0x0101010101010101ull;
      std::memcpy(block + 8 * b, &bytes, 8);  // little-endian: byte k of `bytes` is bit k
    }
    const int64_t first = 4 * base, count = std::min<int64_t>(4 * kPhiloxLanes, std::min(4 * hi, n) - first);
    std::memcpy(kept + first, block, (size_t)count);
  }
}

// kept[0 … n) (bool bytes) for `key` and `threshold` (keep probability × 2³²), under the current instruction set.
void dropout_kept(uint64_t key, int64_t n, uint32_t threshold, uint8_t* kept, int nthreads) {
  const int64_t counters = (n + 3) / 4, chunks = (counters + kDropoutChunk - 1) / kDropoutChunk;
  const int isa = g_isa;
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1 && chunks > 1)
  for (int64_t ch = 0; ch < chunks; ++ch)
    dropout_kept_range(isa, key, ch * kDropoutChunk, std::min(counters, (ch + 1) * kDropoutChunk), n, threshold,
                       kept);
}

// Dropout applied with a kept mask (binarization/dropout.py `_MaskDropout`), one pass instead of PyTorch's three
// (x · s, the bool mask converted to float, the product): forward out[i] = (x[i] · s) · 1[kept[i]], backward
// out[i] = (1[kept[i]] · s) · g[i] — the products, in the order, of the PyTorch composition (kernels/reference.py
// `dropout_apply`), so bit for bit equal to it (-ffp-contract=off; x · 0 keeps its sign and NaN as there).
HF_ELEMENTWISE void dropout_apply_range(const float* __restrict x, const uint8_t* __restrict kept, float s,
                                        bool backward, float* __restrict out, int64_t lo, int64_t hi) {
  if (backward) {
    for (int64_t i = lo; i < hi; ++i) out[i] = ((float)kept[i] * s) * x[i];
  } else {
    for (int64_t i = lo; i < hi; ++i) out[i] = (x[i] * s) * (float)kept[i];
  }
}

void dropout_apply(const float* x, const uint8_t* kept, float s, bool backward, float* out, int64_t n,
                   int nthreads) {
  const int64_t chunks = (n + kDropoutChunk - 1) / kDropoutChunk;
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1 && chunks > 1)
  for (int64_t ch = 0; ch < chunks; ++ch)
    dropout_apply_range(x, kept, s, backward, out, ch * kDropoutChunk, std::min(n, (ch + 1) * kDropoutChunk));
}
