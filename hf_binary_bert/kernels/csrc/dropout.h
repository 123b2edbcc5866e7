// Dropout's kept mask for training (binarization/dropout.py `dropout_kept`): kept[i] = 1[u_i < t] with u_i the i-th
// 32-bit output of the counter-based generator Philox4x32-10 (Salmon, Moraes, Dror, Shaw, "Parallel random numbers:
// as easy as 1, 2, 3", SC 2011; the generator of PyTorch's CUDA and JAX's random bits) under a 64-bit key, and
// t = the keep probability × 2³² (rounded down). Output i is word i mod 4 of the block of counter ⌊i/4⌋ (a 64-bit
// counter in words 0–1, words 2–3 zero), so every element depends on (key, i) only: the same mask for any thread
// count and instruction set, and the pure-PyTorch twin (kernels/reference.py `dropout_kept`) computes it bit for bit.
// ATen's CPU `bernoulli_` draws one Mersenne-Twister (or MKL stream) number per element at about 6 ns; this loop
// vectorizes (the 32 × 32 → 64-bit products are `vpmuludq`) and takes a fraction of a nanosecond per element.

constexpr uint64_t kPhiloxM0 = 0xD2511F53u, kPhiloxM1 = 0xCD9E8D57u;  // round multipliers
constexpr uint64_t kPhiloxW0 = 0x9E3779B9u, kPhiloxW1 = 0xBB67AE85u;  // key schedule (Weyl) increments
constexpr int64_t kDropoutChunk = 1 << 16;                              // counters per parallel chunk

// The four 32-bit words of Philox4x32-10 for counter (c0, c1, c2, c3) and key (k0, k1) (Random123's
// philox4x32_R(10, ...); its published known answers are checked in tests/native/test_kernels_main.cpp).
inline void philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1,
                          uint32_t out[4]) {
  for (int r = 0; r < 10; ++r) {
    const uint64_t p0 = (uint64_t)kPhiloxM0 * c0, p1 = (uint64_t)kPhiloxM1 * c2;
    const uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0, n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
    c1 = (uint32_t)p1;
    c3 = (uint32_t)p0;
    c0 = n0;
    c2 = n2;
    k0 += kPhiloxW0;
    k1 += kPhiloxW1;
  }
  out[0] = c0, out[1] = c1, out[2] = c2, out[3] = c3;
}

constexpr int kPhiloxLanes = 16;  // counters computed side by side (one vector register of words on AVX-512)

// Counters [lo, hi): elements 4·lo … 4·hi − 1, of which those below n are written. kPhiloxLanes counters at a time,
// each round over all of them (the loop the compiler vectorizes), then the words interleaved into the mask.
HF_ELEMENTWISE void dropout_kept_range(uint64_t key, int64_t lo, int64_t hi, int64_t n, uint32_t threshold,
                                       uint8_t* __restrict kept) {
  for (int64_t base = lo; base < hi; base += kPhiloxLanes) {
    // 32-bit words held in 64-bit lanes, so that each round's 32 × 32 → 64-bit products are plain lane-wise
    // multiplies (vpmuludq / vpmullq) the compiler vectorizes.
    uint64_t c0[kPhiloxLanes], c1[kPhiloxLanes], c2[kPhiloxLanes], c3[kPhiloxLanes];
    for (int l = 0; l < kPhiloxLanes; ++l) {
      const uint64_t c = (uint64_t)(base + l);
      c0[l] = c & 0xFFFFFFFFu, c1[l] = c >> 32, c2[l] = 0, c3[l] = 0;
    }
    uint64_t k0 = (uint32_t)key, k1 = (uint32_t)(key >> 32);
    for (int r = 0; r < 10; ++r) {
      for (int l = 0; l < kPhiloxLanes; ++l) {
        const uint64_t p0 = kPhiloxM0 * c0[l], p1 = kPhiloxM1 * c2[l];
        const uint64_t n0 = (p1 >> 32) ^ c1[l] ^ k0, n2 = (p0 >> 32) ^ c3[l] ^ k1;
        c1[l] = p1 & 0xFFFFFFFFu, c3[l] = p0 & 0xFFFFFFFFu, c0[l] = n0, c2[l] = n2;
      }
      k0 = (k0 + kPhiloxW0) & 0xFFFFFFFFu, k1 = (k1 + kPhiloxW1) & 0xFFFFFFFFu;
    }
    uint8_t block[4 * kPhiloxLanes];
    for (int l = 0; l < kPhiloxLanes; ++l) {
      block[4 * l] = (uint8_t)(c0[l] < threshold), block[4 * l + 1] = (uint8_t)(c1[l] < threshold);
      block[4 * l + 2] = (uint8_t)(c2[l] < threshold), block[4 * l + 3] = (uint8_t)(c3[l] < threshold);
    }
    const int64_t first = 4 * base, count = std::min<int64_t>(4 * kPhiloxLanes, std::min(4 * hi, n) - first);
    std::memcpy(kept + first, block, (size_t)count);
  }
}

// kept[0 … n) (bool bytes) for `key` and `threshold` (keep probability × 2³²).
void dropout_kept(uint64_t key, int64_t n, uint32_t threshold, uint8_t* kept, int nthreads) {
  const int64_t counters = (n + 3) / 4, chunks = (counters + kDropoutChunk - 1) / kDropoutChunk;
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1 && chunks > 1)
  for (int64_t ch = 0; ch < chunks; ++ch)
    dropout_kept_range(key, ch * kDropoutChunk, std::min(counters, (ch + 1) * kDropoutChunk), n, threshold, kept);
}
