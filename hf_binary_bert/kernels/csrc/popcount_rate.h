// The machine's XOR + popcount rate: the physical floor the benchmarks compare the binary GEMMs with
// (benchmarks/latency.py, benchmarks/linear_kernels.py). Included once by bitgemm.cpp, inside its anonymous namespace.
//
// Every thread counts popcount(a XOR b) over the same 4 KiB of 64-bit words (L1-resident) again and again, with
// the fastest popcount this CPU has: vpopcntq (AVX-512 VPOPCNTDQ; a few vectors of a held against all of b),
// Harley–Seal carry-save adders over 16 vectors with one nibble-table popcount (vpshufb) per 16 (AVX2; Muła, Kurz &
// Lemire, "Faster population counts using AVX2 instructions", Computer Journal 2018), or the popcnt instruction.
// The result is bit operations (= binary multiply-accumulates of an XNOR-popcount dot product) per second, all
// threads together.
//
// On AVX2 the W1A1 GEMM does not count bits: it looks products up (BitsAvx2PairTable, the nibble-table GEMM: a
// vpshufb of 32 byte lookups, each the dot products of 4 weight bits with 4 bits of two input rows), which beats any
// XOR + popcount mix on AVX2. Its bound, kind 1 below: the tile's arithmetic alone with the tables and indices in
// registers (no loads), so the W1A1 Linears' floor on AVX2 is the larger of the two rates.

constexpr int64_t kRateWords = 512;  // 4 KiB: a and b, 2 KiB each
constexpr int64_t kTableMacsPerStep = 3072;  // binary MACs per call step of table_lookups_avx2 (kind 1)

#if defined(__x86_64__) || defined(_M_X64)
__attribute__((target("avx2"))) inline __m256i popcount256_avx2(__m256i v) {
  const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2,
                                       3, 2, 3, 3, 4);
  const __m256i low = _mm256_set1_epi8(0x0f);
  const __m256i lo = _mm256_shuffle_epi8(lut, _mm256_and_si256(v, low));
  const __m256i hi = _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(v, 4), low));
  return _mm256_sad_epu8(_mm256_add_epi8(lo, hi), _mm256_setzero_si256());
}

__attribute__((target("avx2"))) inline void csa_avx2(__m256i& h, __m256i& l, __m256i a, __m256i b, __m256i c) {
  const __m256i u = _mm256_xor_si256(a, b);
  h = _mm256_or_si256(_mm256_and_si256(a, b), _mm256_and_si256(u, c));
  l = _mm256_xor_si256(u, c);
}

// Σ popcount(a[i] XOR b[i]) over n words (n a multiple of 64), Harley–Seal over 16 vectors.
__attribute__((target("avx2"))) uint64_t xor_popcount_avx2(const uint64_t* a, const uint64_t* b, int64_t n) {
  __m256i total = _mm256_setzero_si256(), ones = total, twos = total, fours = total, eights = total, sixteens;
  __m256i twos_a, twos_b, fours_a, fours_b, eights_a, eights_b;
#define v(i) _mm256_xor_si256(_mm256_loadu_si256((const __m256i*)(a + 4 * (i))), \
                             _mm256_loadu_si256((const __m256i*)(b + 4 * (i))))
  for (int64_t i = 0; i < n / 4; i += 16) {
    csa_avx2(twos_a, ones, ones, v(i), v(i + 1));
    csa_avx2(twos_b, ones, ones, v(i + 2), v(i + 3));
    csa_avx2(fours_a, twos, twos, twos_a, twos_b);
    csa_avx2(twos_a, ones, ones, v(i + 4), v(i + 5));
    csa_avx2(twos_b, ones, ones, v(i + 6), v(i + 7));
    csa_avx2(fours_b, twos, twos, twos_a, twos_b);
    csa_avx2(eights_a, fours, fours, fours_a, fours_b);
    csa_avx2(twos_a, ones, ones, v(i + 8), v(i + 9));
    csa_avx2(twos_b, ones, ones, v(i + 10), v(i + 11));
    csa_avx2(fours_a, twos, twos, twos_a, twos_b);
    csa_avx2(twos_a, ones, ones, v(i + 12), v(i + 13));
    csa_avx2(twos_b, ones, ones, v(i + 14), v(i + 15));
    csa_avx2(fours_b, twos, twos, twos_a, twos_b);
    csa_avx2(eights_b, fours, fours, fours_a, fours_b);
    csa_avx2(sixteens, eights, eights, eights_a, eights_b);
    total = _mm256_add_epi64(total, popcount256_avx2(sixteens));
  }
#undef v
  total = _mm256_slli_epi64(total, 4);
  total = _mm256_add_epi64(total, _mm256_slli_epi64(popcount256_avx2(eights), 3));
  total = _mm256_add_epi64(total, _mm256_slli_epi64(popcount256_avx2(fours), 2));
  total = _mm256_add_epi64(total, _mm256_slli_epi64(popcount256_avx2(twos), 1));
  total = _mm256_add_epi64(total, popcount256_avx2(ones));
  alignas(32) uint64_t lanes[4];
  _mm256_store_si256((__m256i*)lanes, total);
  return lanes[0] + lanes[1] + lanes[2] + lanes[3];
}

// VPOPCNTDQ: 4 vectors of a stay in registers and every vector of b passes all four (Σ_j Σ_i popcount(a_j XOR b_i),
// 4·n words of bit operations), as the GEMM tile holds broadcast input words against weight vectors: one load per 4
// XOR + vpopcntq + add, so the rate is that instruction mix's throughput, not the load ports' (a version with two
// loads per vector measured 0.6× of this on an AMD EPYC Zen 4, below what the GEMM tile itself reaches).
constexpr int kVpopcntReuse = 4;
__attribute__((target("avx512f,avx512bw,avx512vpopcntdq"))) uint64_t xor_popcount_vpopcnt(const uint64_t* a,
                                                                                          const uint64_t* b,
                                                                                          int64_t n) {
  __m512i av[kVpopcntReuse], acc[2 * kVpopcntReuse];
  for (int j = 0; j < kVpopcntReuse; ++j) av[j] = _mm512_loadu_si512(a + 8 * j);
  for (int j = 0; j < 2 * kVpopcntReuse; ++j) acc[j] = _mm512_setzero_si512();
  for (int64_t i = 0; i < n; i += 16) {
    const __m512i b0 = _mm512_loadu_si512(b + i), b1 = _mm512_loadu_si512(b + i + 8);
    for (int j = 0; j < kVpopcntReuse; ++j) {
      acc[j] = _mm512_add_epi64(acc[j], _mm512_popcnt_epi64(_mm512_xor_si512(av[j], b0)));
      acc[kVpopcntReuse + j] = _mm512_add_epi64(acc[kVpopcntReuse + j], _mm512_popcnt_epi64(_mm512_xor_si512(av[j], b1)));
    }
  }
  __m512i total = acc[0];
  for (int j = 1; j < 2 * kVpopcntReuse; ++j) total = _mm512_add_epi64(total, acc[j]);
  return (uint64_t)_mm512_reduce_add_epi64(total);
}

// kind 1: `steps` groups of the table GEMM's arithmetic (BitsAvx2PairTable::tile's loop without its loads: per group
// of 3 steps, 2 tables (row pairs) × 2 index vectors (blocks) × 3 steps = 12 vpshufb + 8 vpaddb into four 4-bit
// counters, then each folded into its byte sums (vpaddb, vpsrlw, vpaddb) = 3,072 binary MACs); returns a byte of the
// sums (a data dependence). (The byte sums are shared by the two pairs here, which only lengthens their chains.)
__attribute__((target("avx2"))) uint64_t table_lookups_avx2(int64_t steps, uint64_t seed) {
  __m256i a0 = _mm256_set1_epi8((char)seed), h0 = a0, a1 = a0, h1 = a0;
  const __m256i t0 = _mm256_set1_epi8(3), t1 = _mm256_set1_epi8(0x15);
  const __m256i i0 = _mm256_set1_epi8((char)(seed & 15)), i1 = _mm256_set1_epi8((char)((seed >> 4) & 15));
#define HFB_LOOKUP3(T, I, N)                \
  "vpshufb %[" I "], %[" T "], %%" N "\n\t" \
  "vpshufb %[" I "], %[" T "], %%ymm8\n\t"  \
  "vpaddb %%ymm8, %%" N ", %%" N "\n\t"     \
  "vpshufb %[" I "], %[" T "], %%ymm8\n\t"  \
  "vpaddb %%ymm8, %%" N ", %%" N "\n\t"
#define HFB_FOLD(N, A, H)                   \
  "vpaddb %%" N ", %[" A "], %[" A "]\n\t"  \
  "vpsrlw $4, %%" N ", %%" N "\n\t"         \
  "vpaddb %%" N ", %[" H "], %[" H "]\n\t"
  for (int64_t s = 0; s < steps; ++s)
    asm volatile(HFB_LOOKUP3("t0", "i0", "ymm12") HFB_LOOKUP3("t0", "i1", "ymm13") HFB_LOOKUP3("t1", "i0", "ymm14")
                 HFB_LOOKUP3("t1", "i1", "ymm15") HFB_FOLD("ymm12", "a0", "h0") HFB_FOLD("ymm13", "a1", "h1")
                 HFB_FOLD("ymm14", "a0", "h0") HFB_FOLD("ymm15", "a1", "h1")
                 : [a0] "+x"(a0), [h0] "+x"(h0), [a1] "+x"(a1), [h1] "+x"(h1)
                 : [t0] "x"(t0), [t1] "x"(t1), [i0] "x"(i0), [i1] "x"(i1)
                 : "xmm8", "xmm12", "xmm13", "xmm14", "xmm15");
#undef HFB_LOOKUP3
#undef HFB_FOLD
  const __m256i sum = _mm256_add_epi8(_mm256_add_epi8(a0, h0), _mm256_add_epi8(a1, h1));
  return (uint64_t)(uint8_t)_mm256_extract_epi8(sum, 0);
}

__attribute__((target("popcnt"))) uint64_t xor_popcount_popcnt(const uint64_t* a, const uint64_t* b, int64_t n) {
#else
#if defined(__aarch64__)
// NEON: vcntq_u8 of 4 registers per step into byte pairs (vpadalq_u8; ≤ 16 per step, n ≤ 512 words here)
uint64_t xor_popcount_neon(const uint64_t* a, const uint64_t* b, int64_t n) {
  uint16x8_t acc[4] = {vdupq_n_u16(0), vdupq_n_u16(0), vdupq_n_u16(0), vdupq_n_u16(0)};
  for (int64_t i = 0; i < n; i += 8)
    for (int j = 0; j < 4; ++j)
      acc[j] = vpadalq_u8(acc[j], vcntq_u8(veorq_u8(vreinterpretq_u8_u64(vld1q_u64(a + i + 2 * j)),
                                                    vreinterpretq_u8_u64(vld1q_u64(b + i + 2 * j)))));
  return vaddlvq_u16(acc[0]) + vaddlvq_u16(acc[1]) + vaddlvq_u16(acc[2]) + vaddlvq_u16(acc[3]);
}
#endif
uint64_t xor_popcount_popcnt(const uint64_t* a, const uint64_t* b, int64_t n) {
#endif
  uint64_t c0 = 0, c1 = 0, c2 = 0, c3 = 0;
  for (int64_t i = 0; i < n; i += 4) {
    c0 += __builtin_popcountll(a[i] ^ b[i]);
    c1 += __builtin_popcountll(a[i + 1] ^ b[i + 1]);
    c2 += __builtin_popcountll(a[i + 2] ^ b[i + 2]);
    c3 += __builtin_popcountll(a[i + 3] ^ b[i + 3]);
  }
  return c0 + c1 + c2 + c3;
}

#ifndef HF_BITGEMM_NO_PYTHON
// popcount_rate(nthreads, seconds[, kind]) → G bit operations (binary MACs) per second, all threads together; kind 0:
// XOR + popcount, 1: the nibble-table lookup bound (AVX2 paths only: ValueError elsewhere), 2: the AMX tiles' u8 × s8
// MACs per second (amx_rate_calls; avx512_amx only).
PyObject* py_popcount_rate(PyObject*, PyObject* args) {
  int nthreads, kind = 0;
  double seconds;
  if (!PyArg_ParseTuple(args, "id|i", &nthreads, &seconds, &kind)) return nullptr;
  const int isa = g_isa;
#if defined(__x86_64__) || defined(_M_X64)
  const bool table_ok = isa >= AVX2 && kFeatures.avx2;
#else
  const bool table_ok = false;
#endif
  const bool amx_ok = isa == AVX512_AMX && kFeatures.amx;
  if (kind != 0 && (kind != 1 || !table_ok) && (kind != 2 || !amx_ok)) {
    PyErr_Format(PyExc_ValueError, "popcount_rate: kind %d is not measured on instruction set %s (0: XOR + popcount; "
                 "1: the nibble-table lookup, AVX2 paths only; 2: the AMX tiles, avx512_amx only)", kind, kIsaNames[isa]);
    return nullptr;
  }
#if defined(__x86_64__) || defined(_M_X64)
  if (kind == 2) {
    double macs = 0.0, took = 0.0;
    Py_BEGIN_ALLOW_THREADS;
    const double begin = omp_get_wtime();
#pragma omp parallel num_threads(nthreads) reduction(+ : macs)
    macs += (double)amx_rate_calls(begin + seconds) * kAmxRateMacsPerCall;
    took = omp_get_wtime() - begin;
    Py_END_ALLOW_THREADS;
    return PyFloat_FromDouble(macs / took / 1e9);
  }
#endif
  double total_bits = 0.0, elapsed = 0.0;
  uint64_t sink = 0;
  Py_BEGIN_ALLOW_THREADS;
  const double start = omp_get_wtime();
#pragma omp parallel num_threads(nthreads) reduction(+ : total_bits) reduction(^ : sink)
  {
    alignas(64) uint64_t a[kRateWords / 2], b[kRateWords / 2];
    for (int64_t i = 0; i < kRateWords / 2; ++i) {
      a[i] = 0x9E3779B97F4A7C15ULL * (uint64_t)(i + 1 + omp_get_thread_num());
      b[i] = a[i] * 0xBF58476D1CE4E5B9ULL;
    }
    int64_t rounds = 0;
    while (omp_get_wtime() - start < seconds) {
      for (int r = 0; r < 256; ++r) {
#if defined(__x86_64__) || defined(_M_X64)
        if (kind == 1)
          sink ^= table_lookups_avx2(kRateWords / 2, sink + (uint64_t)r);
        else if (vpopcnt_isa(isa))
          sink ^= xor_popcount_vpopcnt(a, b, kRateWords / 2);
        else if (isa >= AVX2 && kFeatures.avx2)
          sink ^= xor_popcount_avx2(a, b, kRateWords / 2);
        else
#elif defined(__aarch64__)
        if (isa == NEON)
          sink ^= xor_popcount_neon(a, b, kRateWords / 2);
        else
#endif
          sink ^= xor_popcount_popcnt(a, b, kRateWords / 2);
        a[r % (kRateWords / 2)] += sink & 1;  // a data dependence, so no call is hoisted out of the loop
      }
      rounds += 256;
    }
#if defined(__x86_64__) || defined(_M_X64)
    const double reuse = vpopcnt_isa(isa) ? kVpopcntReuse : 1;
#else
    const double reuse = 1;
#endif
    if (kind == 1)
      total_bits += (double)rounds * (kRateWords / 2) * (double)kTableMacsPerStep;
    else
      total_bits += (double)rounds * (kRateWords / 2) * 64.0 * reuse;
  }
  elapsed = omp_get_wtime() - start;
  Py_END_ALLOW_THREADS;
  (void)sink;
  return PyFloat_FromDouble(total_bits / elapsed / 1e9);
}
#endif  // HF_BITGEMM_NO_PYTHON
