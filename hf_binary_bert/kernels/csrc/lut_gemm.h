// W1 × u8 GEMMs by lookup tables of input sums: the AVX2 and AVX-512 paths of w1a8_linear (run_w1a8) for
// M ≥ kLutMinRows. Included by bitgemm.cpp inside its anonymous namespace, after Epilogue / finish_row; reads the "nib"
// weight layout. x86-64 only (empty elsewhere).
//
// Idea (lookup-table GEMMs for low-bit weights: T-MAC, bitnet.cpp's TL kernels): with B ∈ {−1,+1} as bits b,
//   Σ_k u_k·B_nk = 2·Σ_k u_k·b_nk − Σ_k u_k = 2·Σ_g T_g[p_ng] − Σ_k u_k,
// where group g covers G consecutive k, p_ng = the G weight bits of row n in group g (bit t = k = G·g + t) and
// T_g[p] = Σ_{t : bit t of p} u_{G·g+t} (2^G entries) is built once per input row and group, then shared by every
// output row. The sums are exact integers, so every path gives the same raw dot products; the epilogue applies
// 2·raw − Σ_k u_k − z·Σ_k B_nk (the same integer as the other paths).
//
// AVX2 (LutAvx2, G = 4): T_g is kept as two 16-byte tables, its low and high bytes; one vpshufb per table looks up
// 32 output rows at once (their nibbles one per byte), and vpunpckl/hbw joins the two bytes into 16-bit sums: 6 vector
// ops per 32 rows × 4 MACs (the blend + vpmaddubsw path costs ~22). Measured (AMD EPYC Zen 3, 1 thread, BERT-base
// shapes): ~145–155 G MAC/s against ~40 for the blend path.
//
// AVX-512BW (LutAvx512, G = 6): T_g is 64 16-bit entries in two zmm registers; one vpermi2w (a two-table word
// permute: index bits 0–4 pick the entry, bit 5 the table) looks up 32 output rows × 6 MACs = 192 MACs, and one
// vpaddw adds them to 16-bit accumulators. VNNI's vpdpbusd (the avx512 path without tables) does 64 MACs per
// instruction, and both issue about once per cycle (AMD Zen 4, measured: 0.28 ns each, one zmm per cycle), so the
// lookup does 3× the work per instruction of the shuffle/multiply pipe.
//
// Exactness: the 16-bit accumulators take at most L::kChunk steps (AVX2: 64 steps × 1020 = 65280; AVX-512: 16 steps
// of two groups × 2·1530 = 48960, both < 2^16) and are then added into int32 row results.
//
// Layouts:
//   index: [ceil(N/32)][steps][L::kIndexBytes]: the weight bits of one 32-row block for one step, lane order chosen so
//          that the 16-bit accumulators unpack to rows 0 … 31 in order (see each kernel), made from the nib words of
//          groups 2c and 2c + 1: per call on AVX2 (O(N·K), all threads); on AVX-512 it comes with the weights
//          (LutOperand::index, made by repack_nib_layout / lut6_index; run_w1a8_shared uses VNNI without it);
//   tables: per work item, for its rows and one chunk of steps: [rows][L::kChunk][L::kTableBytes].
// Work items: kLutRowsPerItem input rows × a span of output columns (all N unless M is small), chunk by chunk of
// steps; within a chunk, for each 32·NB-column block, every MR-row tile of the item.

#if defined(__x86_64__) || defined(_M_X64)

// kLutRowsPerItem = 4: the tables of an item's rows for one chunk (AVX2: 4 · 64 steps · 64 bytes; AVX-512:
// 4 · 16 steps · 256 bytes; 16 KiB either way) stay in L1 while its column blocks stream past.
constexpr int64_t kLutMinRows = 4, kLutRowsPerItem = 4, kLutBlock = 32;

inline uint8_t* lut_aligned(std::vector<uint64_t>& v, size_t bytes) {
  if (v.size() * 8 < bytes + 64) v.resize((bytes + 64) / 8 + 64);
  return reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(v.data()) + 63) & ~(uintptr_t)63);
}

// AVX2: one step = one nib word (4 k, 16 rows per group); index bytes of a block: byte j of (block c, step s) =
// nibble of row 32c + ρ(j), ρ chosen so that vpunpcklbw gives rows 0 … 15 and vpunpckhbw rows 16 … 31 in order
// (bytes 0–7: rows 0–7, 8–15: rows 16–23, 16–23: rows 8–15, 24–31: rows 24–31); tables per step: the low bytes of
// T_s[0 … 15] in both 128-bit lanes, then the high bytes likewise (plain 256-bit loads: vbroadcasti128 from memory
// costs a shuffle-unit op on AMD Zen, the port the lookups need).
struct LutAvx2 {
  static constexpr int64_t kIndexBytes = 32, kTableBytes = 64, kChunk = 64;
  static constexpr int kMR = 1, kNB = 4;  // 1 input row × 4 blocks: 8 accumulators, 4 index vectors, 2 tables
  static constexpr bool kIndexAhead = false;  // the index is built per call (index_block)

  static int64_t steps_of(int64_t nib_steps) { return nib_steps; }

  // Index bytes of block c (rows 32c … 32c+31) for every step.
  __attribute__((target("avx2"))) static void index_block(const uint64_t* nib, int64_t groups, int64_t nib_steps,
                                                          int64_t c, uint8_t* out) {
    const uint64_t* w0 = nib + 2 * c * nib_steps;
    const uint64_t* w1 = 2 * c + 1 < groups ? nib + (2 * c + 1) * nib_steps : nullptr;
    const __m128i low = _mm_set1_epi8(0x0F);
    for (int64_t s = 0; s < nib_steps; ++s) {
      const __m128i x = _mm_set_epi64x(w1 ? (long long)w1[s] : 0, (long long)w0[s]);
      const __m128i lo = _mm_and_si128(x, low), hi = _mm_and_si128(_mm_srli_epi16(x, 4), low);
      const __m128i a = _mm_unpacklo_epi8(lo, hi), b = _mm_unpackhi_epi8(lo, hi);  // rows 0 … 15, rows 16 … 31
      _mm_store_si128((__m128i*)(out + s * 32), _mm_unpacklo_epi64(a, b));
      _mm_store_si128((__m128i*)(out + s * 32 + 16), _mm_unpackhi_epi64(a, b));
    }
  }

  // Tables of steps s0 … s0+cs−1 of one input row u (lu ≥ 4·steps bytes): 64 bytes per step.
  __attribute__((target("avx2"))) static void tables(const uint8_t* u, int64_t lu, int64_t s0, int64_t cs,
                                                     uint8_t* out) {
    (void)lu;
    // 16-bit lane p: T[p] = (u0·bit0(p) + u1·bit1(p)) + (u2·bit2(p) + u3·bit3(p)), two vpmaddubsw
    const __m256i cx = _mm256_setr_epi8(0, 0, 1, 0, 0, 1, 1, 1, 0, 0, 1, 0, 0, 1, 1, 1, 0, 0, 1, 0, 0, 1, 1, 1, 0, 0,
                                        1, 0, 0, 1, 1, 1);
    const __m256i cy = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 1, 0, 1, 0, 0, 1, 0, 1, 0, 1, 0, 1, 1, 1,
                                        1, 1, 1, 1, 1, 1);
    const __m256i byte = _mm256_set1_epi16(0xFF);
    for (int64_t s = 0; s < cs; ++s) {
      uint16_t x, y;
      std::memcpy(&x, u + 4 * (s0 + s), 2);
      std::memcpy(&y, u + 4 * (s0 + s) + 2, 2);
      const __m256i t = _mm256_add_epi16(_mm256_maddubs_epi16(_mm256_set1_epi16((short)x), cx),
                                         _mm256_maddubs_epi16(_mm256_set1_epi16((short)y), cy));
      const __m256i packed = _mm256_packus_epi16(_mm256_and_si256(t, byte), _mm256_srli_epi16(t, 8));
      _mm256_store_si256((__m256i*)(out + s * 64), _mm256_permute4x64_epi64(packed, 0x88));
      _mm256_store_si256((__m256i*)(out + s * 64 + 32), _mm256_permute4x64_epi64(packed, 0xDD));
    }
  }

  // MR input rows × NB blocks of 32 output rows over cs ≤ kChunk steps, added into raw (int32, row stride ldr).
  template <int MR, int NB>
  __attribute__((target("avx2"))) static void tile(const uint8_t* tab, int64_t tstride, const uint8_t* idx,
                                                   int64_t istride, int64_t cs, int32_t* raw, int64_t ldr) {
    __m256i acc[MR][NB][2];
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NB; ++j) acc[i][j][0] = acc[i][j][1] = _mm256_setzero_si256();
    for (int64_t s = 0; s < cs; ++s) {
      __m256i ix[NB];
      for (int j = 0; j < NB; ++j) ix[j] = _mm256_load_si256((const __m256i*)(idx + j * istride + s * 32));
      for (int i = 0; i < MR; ++i) {
        const __m256i tlo = _mm256_load_si256((const __m256i*)(tab + i * tstride + s * 64));
        const __m256i thi = _mm256_load_si256((const __m256i*)(tab + i * tstride + s * 64 + 32));
        for (int j = 0; j < NB; ++j) {
          const __m256i lo = _mm256_shuffle_epi8(tlo, ix[j]), hi = _mm256_shuffle_epi8(thi, ix[j]);
          acc[i][j][0] = _mm256_add_epi16(acc[i][j][0], _mm256_unpacklo_epi8(lo, hi));
          acc[i][j][1] = _mm256_add_epi16(acc[i][j][1], _mm256_unpackhi_epi8(lo, hi));
        }
      }
    }
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NB; ++j)
        for (int h = 0; h < 2; ++h) {
          int32_t* r = raw + i * ldr + j * 32 + h * 16;
          const __m256i a = acc[i][j][h];
          _mm256_store_si256((__m256i*)r, _mm256_add_epi32(_mm256_load_si256((const __m256i*)r),
                                                            _mm256_cvtepu16_epi32(_mm256_castsi256_si128(a))));
          _mm256_store_si256((__m256i*)(r + 8),
                             _mm256_add_epi32(_mm256_load_si256((const __m256i*)(r + 8)),
                                              _mm256_cvtepu16_epi32(_mm256_extracti128_si256(a, 1))));
        }
  }
};

// AVX-512BW: one step = three nib words = 12 k = two groups of G = 6 (group 2p: k = 12p … 12p+5, group 2p+1:
// k = 12p+6 … 12p+11). Index of (block c, step p): 32 16-bit words; word 2q is row 32c + q, word 2q + 1 row
// 32c + 16 + q (so the even/odd 16-bit halves of the 32-bit lanes are rows 0 … 15 and 16 … 31 in order); its low byte
// is the row's 6 bits of group 2p, its high byte those of group 2p + 1 (vpermi2w reads bits 0–5 only: the high byte
// is shifted down for the second group). Tables per step: for each of its two groups, T[0 … 31] then T[32 … 63]
// (= T[0 … 31] + u_5), 16-bit: 256 bytes.
struct LutAvx512 {
  static constexpr int64_t kIndexBytes = 64, kTableBytes = 256, kChunk = 16;
  static constexpr int kMR = 4, kNB = 4;  // 16 accumulators, 4 index vectors, 2 tables
  static constexpr bool kIndexAhead = true;  // the index comes with the weights (LutOperand::index, lut6_index)

  static int64_t steps_of(int64_t nib_steps) { return lut6_steps(nib_steps); }

  // Tables of steps p0 … p0+cs−1 of one input row u of lu bytes (read up to byte 12·(p0+cs), zero past lu).
  __attribute__((target("avx512f,avx512bw"))) static void tables(const uint8_t* u, int64_t lu, int64_t p0,
                                                                 int64_t cs, uint8_t* out) {
    // byte pairs of 16-bit lane q: (bit0(q), bit1(q)), (bit2(q), bit3(q)), (bit4(q), 0), (bit4(q), 1)
    alignas(64) int8_t c01[64], c23[64], c4[64], c45[64];
    for (int q = 0; q < 32; ++q) {
      c01[2 * q] = q & 1, c01[2 * q + 1] = (q >> 1) & 1;
      c23[2 * q] = (q >> 2) & 1, c23[2 * q + 1] = (q >> 3) & 1;
      c4[2 * q] = c45[2 * q] = (q >> 4) & 1;
      c4[2 * q + 1] = 0, c45[2 * q + 1] = 1;
    }
    const __m512i k01 = _mm512_load_si512(c01), k23 = _mm512_load_si512(c23), k4 = _mm512_load_si512(c4),
                  k45 = _mm512_load_si512(c45);
    for (int64_t p = 0; p < cs; ++p) {
      const int64_t at = 12 * (p0 + p);
      uint8_t b[12] = {0};
      std::memcpy(b, u + at, (size_t)std::max<int64_t>(0, std::min<int64_t>(12, lu - at)));
      for (int g = 0; g < 2; ++g) {
        const uint8_t* v = b + 6 * g;
        const __m512i s = _mm512_add_epi16(_mm512_maddubs_epi16(_mm512_set1_epi16((short)(v[0] | v[1] << 8)), k01),
                                           _mm512_maddubs_epi16(_mm512_set1_epi16((short)(v[2] | v[3] << 8)), k23));
        const __m512i x45 = _mm512_set1_epi16((short)(v[4] | v[5] << 8));
        _mm512_store_si512(out + p * 256 + g * 128, _mm512_add_epi16(s, _mm512_maddubs_epi16(x45, k4)));
        _mm512_store_si512(out + p * 256 + g * 128 + 64, _mm512_add_epi16(s, _mm512_maddubs_epi16(x45, k45)));
      }
    }
  }

  template <int MR, int NB>
  __attribute__((target("avx512f,avx512bw"))) static void tile(const uint8_t* tab, int64_t tstride, const uint8_t* idx,
                                                               int64_t istride, int64_t cs, int32_t* raw, int64_t ldr) {
    __m512i acc[MR][NB];
#pragma GCC unroll 4
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
      for (int j = 0; j < NB; ++j) acc[i][j] = _mm512_setzero_si512();
    for (int64_t p = 0; p < cs; ++p) {
      __m512i ix[NB];
#pragma GCC unroll 4
      for (int j = 0; j < NB; ++j) ix[j] = _mm512_loadu_si512(idx + j * istride + p * 64);  // (any alignment)
#pragma GCC unroll 2
      for (int g = 0; g < 2; ++g) {
#pragma GCC unroll 4
        for (int i = 0; i < MR; ++i) {
          const uint8_t* t = tab + i * tstride + p * 256 + g * 128;
          const __m512i lo = _mm512_load_si512(t), hi = _mm512_load_si512(t + 64);
#pragma GCC unroll 4
          for (int j = 0; j < NB; ++j)
            acc[i][j] = _mm512_add_epi16(acc[i][j], _mm512_permutex2var_epi16(lo, ix[j], hi));
        }
        // keeps GCC from adding the two groups' lookups together before the accumulator (more live registers
        // than there are: it spilled the accumulators)
#pragma GCC unroll 4
        for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
          for (int j = 0; j < NB; ++j) __asm__("" : "+v"(acc[i][j]));
        if (g == 0)
#pragma GCC unroll 4
          for (int j = 0; j < NB; ++j) ix[j] = _mm512_srli_epi16(ix[j], 8);
      }
    }
    const __m512i low16 = _mm512_set1_epi32(0xFFFF);
#pragma GCC unroll 4
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
      for (int j = 0; j < NB; ++j) {
        int32_t* r = raw + i * ldr + j * 32;
        _mm512_store_si512(r, _mm512_add_epi32(_mm512_load_si512(r), _mm512_and_si512(acc[i][j], low16)));
        _mm512_store_si512(r + 16, _mm512_add_epi32(_mm512_load_si512(r + 16), _mm512_srli_epi32(acc[i][j], 16)));
      }
  }
};

// One weight matrix of a lut_w1a8 call: the nib layout of its N rows and the epilogue of the other paths (mul 1,
// add_n = −z·Σ_k B_nk, xsum = Σ_k q).
struct LutOperand {
  const uint64_t* nib;
  int64_t N;
  Epilogue e;
  const uint8_t* index = nullptr;  // LutAvx512's index of these weights, made with them (lut6_index); unused by AVX2
};

// u: M rows of lu bytes (q + z, zero past K; lu a multiple of 64), nib_steps = ceil(K/4); ops: nops weight matrices
// that all read this input (Q, K and V with one shared input quantizer): each input row's tables are built once per
// chunk and serve every operand's blocks; z: the zero point.
template <class L>
void lut_w1a8_with(int64_t M, const uint8_t* u, int64_t lu, int64_t nib_steps, int64_t K, int z, int nops,
                   const LutOperand* ops, int nthreads) {
  constexpr int64_t span_unit = kLutBlock * L::kNB;
  const int64_t mblocks = (M + kLutRowsPerItem - 1) / kLutRowsPerItem;
  if (nops > 1 && nthreads > 1 && mblocks < 2 * nthreads) {  // too few rows to share: column spans per operand
    for (int i = 0; i < nops; ++i) lut_w1a8_with<L>(M, u, lu, nib_steps, K, z, 1, ops + i, nthreads);
    return;
  }
  constexpr int kMaxOps = 4;
  if (nops < 1 || nops > kMaxOps) return;
  const int64_t steps = L::steps_of(nib_steps), istride = steps * L::kIndexBytes;
  int64_t blocks[kMaxOps], ioff[kMaxOps + 1] = {0};
  for (int i = 0; i < nops; ++i) {
    blocks[i] = (ops[i].N + kLutBlock - 1) / kLutBlock;
    ioff[i + 1] = ioff[i] + blocks[i] * istride;
  }
  // AVX-512: the index came with the weights (repack "nib"); AVX2: built here, per call
  static thread_local std::vector<uint64_t> index_buffer, add_m_buffer;
  uint8_t* index = L::kIndexAhead ? nullptr : lut_aligned(index_buffer, (size_t)ioff[nops]);
  const uint8_t* op_index[kMaxOps];
  for (int i = 0; i < nops; ++i) op_index[i] = L::kIndexAhead ? ops[i].index : index + ioff[i];
  int64_t* add_m = reinterpret_cast<int64_t*>(lut_aligned(add_m_buffer, (size_t)M * 8));
  for (int64_t m = 0; m < M; ++m) add_m[m] = -(ops[0].e.xsum[m] + (int64_t)z * K);  // −Σ_k u_k
  Epilogue e[kMaxOps];
  for (int i = 0; i < nops; ++i) {
    e[i] = ops[i].e;
    e[i].mul = 2;
    e[i].add_m = add_m;
  }
  // work items: row blocks × column spans (one operand only: several spans when there are fewer row blocks than 2
  // per thread)
  const int64_t N0 = ops[0].N;
  int64_t nspans = 1;
  if (nops == 1 && nthreads > 1 && mblocks < 2 * nthreads)
    nspans = std::min((2 * nthreads + mblocks - 1) / mblocks, (N0 + span_unit - 1) / span_unit);
  const int64_t span = nops == 1 ? ((N0 + nspans - 1) / nspans + span_unit - 1) / span_unit * span_unit : N0;
  if (nops == 1) nspans = (N0 + span - 1) / span;
  const int64_t items = mblocks * nspans, all_blocks = L::kIndexAhead ? 0 : ioff[nops] / istride;
  int64_t total_mnk = 0;
  for (int i = 0; i < nops; ++i) total_mnk += M * ops[i].N * K;
  const bool parallel = nthreads > 1 && total_mnk > (1 << 20);
  StealingRanges ranges(items, parallel ? nthreads : 1);
#pragma omp parallel num_threads(nthreads) if (parallel)
  {
#pragma omp for schedule(static)
    for (int64_t b = 0; b < all_blocks; ++b) {
      int i = 0;
      while (b * istride >= ioff[i + 1]) ++i;
      const int64_t c = b - ioff[i] / istride;
      if constexpr (!L::kIndexAhead)
        L::index_block(ops[i].nib, (ops[i].N + kNibGroup - 1) / kNibGroup, nib_steps, c, index + b * istride);
    }
    int k = 0;
    for (int64_t item; (item = ranges.claim(k)) >= 0;) {
      static thread_local std::vector<uint64_t> table_buffer, raw_buffer;
      const int64_t m0 = item / nspans * kLutRowsPerItem, rows = std::min(kLutRowsPerItem, M - m0);
      // operand i covers its blocks c0[i] … c1[i]−1, rows of raw_i = raw + roff[i] with stride ldr[i]
      int64_t c0[kMaxOps], c1[kMaxOps], ldr[kMaxOps], n0[kMaxOps], count[kMaxOps], roff[kMaxOps + 1] = {0};
      for (int i = 0; i < nops; ++i) {
        n0[i] = nops == 1 ? item % nspans * span : 0;
        count[i] = nops == 1 ? std::min(span, N0 - n0[i]) : ops[i].N;
        c0[i] = n0[i] / kLutBlock;
        c1[i] = (n0[i] + count[i] + kLutBlock - 1) / kLutBlock;
        ldr[i] = (c1[i] - c0[i]) * kLutBlock;
        roff[i + 1] = roff[i] + rows * ldr[i];
      }
      const int64_t tstride = L::kChunk * L::kTableBytes;
      uint8_t* tab = lut_aligned(table_buffer, (size_t)(rows * tstride));
      int32_t* raw = reinterpret_cast<int32_t*>(lut_aligned(raw_buffer, (size_t)(roff[nops] * 4)));
      std::memset(raw, 0, (size_t)(roff[nops] * 4));
      for (int64_t s0 = 0; s0 < steps; s0 += L::kChunk) {
        const int64_t cs = std::min(L::kChunk, steps - s0);
        for (int64_t i = 0; i < rows; ++i) L::tables(u + (m0 + i) * lu, lu, s0, cs, tab + i * tstride);
        for (int op = 0; op < nops; ++op) {
          int64_t c = c0[op];
          auto run_blocks = [&](auto nb) {
            constexpr int NB = decltype(nb)::value;
            const uint8_t* ix = op_index[op] + c * istride + s0 * L::kIndexBytes;
            int32_t* out = raw + roff[op] + (c - c0[op]) * kLutBlock;
            int64_t i = 0;
            for (; i + L::kMR <= rows; i += L::kMR)
              L::template tile<L::kMR, NB>(tab + i * tstride, tstride, ix, istride, cs, out + i * ldr[op], ldr[op]);
            for (; i < rows; ++i)
              L::template tile<1, NB>(tab + i * tstride, tstride, ix, istride, cs, out + i * ldr[op], ldr[op]);
          };
          for (; c + L::kNB <= c1[op]; c += L::kNB) run_blocks(std::integral_constant<int, L::kNB>());
          for (; c < c1[op]; ++c) run_blocks(std::integral_constant<int, 1>());
        }
      }
      for (int op = 0; op < nops; ++op)
        for (int64_t i = 0; i < rows; ++i)
          finish_row(e[op], m0 + i, n0[op], count[op], raw + roff[op] + i * ldr[op]);
    }
  }
}

// The lookup-table path of `isa` (AVX2 or any AVX-512BW path).
void lut_w1a8(int isa, int64_t M, const uint8_t* u, int64_t lu, int64_t nib_steps, int64_t K, int z, int nops,
              const LutOperand* ops, int nthreads) {
  if (isa >= AVX512)
    lut_w1a8_with<LutAvx512>(M, u, lu, nib_steps, K, z, nops, ops, nthreads);
  else
    lut_w1a8_with<LutAvx2>(M, u, lu, nib_steps, K, z, nops, ops, nthreads);
}

// ------------------------------------------------------------------------------------------------------------------
// AVX2 input quantization for run_w1a8 (quantize_rows): the same floats as quantize_row_scalar (IEEE division,
// clamp, round half to even), 8 at a time; and max_k |x_k − β_k| for the dynamic step (max is exact in any order).

int64_t quantize_row_scalar(const float* row, int64_t from, int64_t K, const float* shift, float step, int qn, int qp,
                            int z, uint8_t* out);

__attribute__((target("avx2"))) int64_t quantize_row_avx2(const float* row, int64_t K, const float* shift,
                                                          float step, int qn, int qp, int z, uint8_t* out) {
  const __m256 vs = _mm256_set1_ps(step), lo = _mm256_set1_ps((float)qn), hi = _mm256_set1_ps((float)qp);
  const __m256i vz = _mm256_set1_epi32(z);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  __m256i total = _mm256_setzero_si256();
  int64_t k = 0;
  for (; k + 32 <= K; k += 32) {
    __m256i q[4];
    for (int j = 0; j < 4; ++j) {
      __m256 v = _mm256_loadu_ps(row + k + 8 * j);
      if (shift) v = _mm256_sub_ps(v, _mm256_loadu_ps(shift + k + 8 * j));
      v = _mm256_min_ps(_mm256_max_ps(_mm256_div_ps(v, vs), lo), hi);
      q[j] = _mm256_cvtps_epi32(_mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
      total = _mm256_add_epi32(total, q[j]);
      q[j] = _mm256_add_epi32(q[j], vz);  // 0 … 255
    }
    // packs work per 128-bit lane: bytes come out as dwords 0,1 of each of q0..q3 per lane; vpermd restores order
    const __m256i w = _mm256_packus_epi16(_mm256_packus_epi32(q[0], q[1]), _mm256_packus_epi32(q[2], q[3]));
    _mm256_storeu_si256((__m256i*)(out + k), _mm256_permutevar8x32_epi32(w, order));
  }
  const __m128i t = _mm_add_epi32(_mm256_castsi256_si128(total), _mm256_extracti128_si256(total, 1));
  const __m128i t2 = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0x4E));
  const int32_t sum = _mm_cvtsi128_si32(_mm_add_epi32(t2, _mm_shuffle_epi32(t2, 0xB1)));
  return sum + quantize_row_scalar(row, k, K, shift, step, qn, qp, z, out);
}

__attribute__((target("avx2"))) float abs_max_avx2(const float* row, int64_t K, const float* shift) {
  const __m256 magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  __m256 best = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) {
    __m256 v = _mm256_loadu_ps(row + k);
    if (shift) v = _mm256_sub_ps(v, _mm256_loadu_ps(shift + k));
    best = _mm256_max_ps(best, _mm256_and_ps(v, magnitude));
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, best);
  float amax = 0.0f;
  for (int j = 0; j < 8; ++j) amax = std::max(amax, lanes[j]);
  for (; k < K; ++k) amax = std::max(amax, std::fabs(shift ? row[k] - shift[k] : row[k]));
  return amax;
}

#endif  // x86-64
