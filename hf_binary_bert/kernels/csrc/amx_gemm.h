// Intel AMX (Advanced Matrix Extensions: AMX-TILE + AMX-INT8, Sapphire Rapids and later) GEMM of the W1 × u8
// Linears (W1A2 … W1A8, and W1A32 with int8 activations), instruction set "avx512_amx" (everything else on that path,
// the W1A1 GEMMs included, is avx512_vpopcnt's code).
//
// One `tdpbusd` multiplies a 16 × 64 u8 tile by a 64 × 16 s8 tile into 16 × 16 int32 sums: 16,384 multiply-
// accumulates, issued once per 16 cycles per core (Intel's optimization manual, AMX chapter), 1,024 MACs per cycle,
// where VNNI `vpdpbusd` does 64 and the AVX-512 lookup tables (lut_gemm.h) 192 per instruction. With u8 inputs and ±1
// weights the int32 sums are exact, the same integers as the lookup tables', so the epilogue and the outputs are bit
// for bit those of the other paths.
//
//   A (inputs): u8 rows as run_w1a8 quantizes them, `lu` = 64·ceil(K/64) bytes per row, zero past K, the rows
//     padded with zero rows to a multiple of 32 (the GEMM reads whole 32-row blocks and finishes the M real rows).
//   B (weights): the "amx" layout, made once per Linear by the runtime's plan from the checkpoint bits (amx_layout):
//     uint64 [ceil(N/64)·4 blocks of 16 rows][ceil(K/64) chunks][16]; word q of (block b, chunk c) holds, at bit
//     4j + t, B[16b + j][64c + 4q + t] (1 = +1): row q of the tile in AMX's VNNI order (4 consecutive inputs of each
//     of 16 rows), so expanding a tile to ±1 bytes is one mask blend per 64 bytes (amx_expand_block). 1 bit per
//     weight, as the other layouts.
//   C: Σ_k u·b, which finish_rows turns into the outputs as on the other W1 × u8 paths.
//
// Work items: 64 output columns (the packing epilogue's 64-column words) × up to kAmxRowChunk rows, run as 32 × 32
// blocks (2 A tiles × 2 B tiles → 4 accumulator tiles, 4 `tdpbusd` per 64 inputs) over slices of K (amx_gemm).
// Linux only: the process asks the kernel for the AMX tile state (arch_prctl(ARCH_REQ_XCOMP_PERM,
// XFEATURE_XTILEDATA)) once, in amx_permitted().
//
// Measured on a Sapphire Rapids VM core (Intel Xeon, family 6 model 167, one thread, GEMM + epilogue, M = 128):
// 2.6–2.9× the AVX-512 lookup tables' speed (N × K = 3072 × 768: 1,227 → 422 µs; 768 × 3072: 1,251 → 431 µs). The
// tile instructions alone reach 2.4 T MACs/s with L1-resident operands, the whole GEMM about 0.7 T. The same tiles
// on W1A1 (inputs expanded to ±1 bytes, `tdpbssd`) were no faster than `vpopcntq` there (3072 × 768: 376–414 against
// 346–362 µs; 768 × 768: 108–117 against 126–135 µs), so W1A1 keeps the popcount kernels.

#if defined(__x86_64__) || defined(_M_X64)

constexpr int64_t kAmxRowChunk = 256;

inline int64_t amx_chunks(int64_t K) { return (K + 63) / 64; }
inline int64_t amx_blocks(int64_t N) { return (N + 63) / 64 * 4; }
int64_t amx_layout_words(int64_t N, int64_t K) { return amx_blocks(N) * amx_chunks(K) * 16; }

// The "amx" layout of packed checkpoint bits w [N, ceil(K/8)] (amx_layout_words long; rows past N and inputs past K
// are 0). Scalar over the weight bits: once per Linear.
void amx_layout(const uint8_t* w, int64_t N, int64_t K, uint64_t* out, int nthreads) {
  const int64_t ld = (K + 7) / 8, chunks = amx_chunks(K), blocks = amx_blocks(N);
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1 && N * K > (1 << 20))
  for (int64_t b = 0; b < blocks; ++b)
    for (int64_t c = 0; c < chunks; ++c)
      for (int q = 0; q < 16; ++q) {
        uint64_t word = 0;
        for (int j = 0; j < 16; ++j) {
          const int64_t n = 16 * b + j;
          if (n >= N) break;
          for (int t = 0; t < 4; ++t) {
            const int64_t k = 64 * c + 4 * q + t;
            if (k < K && ((w[n * ld + k / 8] >> (k % 8)) & 1)) word |= 1ULL << (4 * j + t);
          }
        }
        out[(b * chunks + c) * 16 + q] = word;
      }
}

#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

// AMX-TILE and AMX-INT8 in CPUID leaf 7 (EDX bits 24, 25), the tile state enabled by the OS (XCR0 bits 17, 18), and
// (Linux) the process's permission to use it. Called once (kFeatures).
bool amx_permitted() {
#if defined(__linux__)
  unsigned int eax, ebx, ecx, edx;
  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) || !((edx >> 24) & 1) || !((edx >> 25) & 1)) return false;
  if (!__get_cpuid_count(1, 0, &eax, &ebx, &ecx, &edx) || !((ecx >> 27) & 1)) return false;  // OSXSAVE
  uint32_t lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  if (((lo >> 17) & 3) != 3) return false;
  constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#else
  return false;
#endif
}

struct alignas(64) AmxTileConfig {
  uint8_t palette = 1, start_row = 0, reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// Every tile 16 rows × 64 bytes (palette 1); loaded at the start of a GEMM on each thread, released at its end.
__attribute__((target("amx-tile"))) inline void amx_begin() {
  AmxTileConfig config;
  for (int t = 0; t < 8; ++t) config.colsb[t] = 64, config.rows[t] = 16;
  _tile_loadconfig(&config);
}

__attribute__((target("amx-tile"))) inline void amx_end() { _tile_release(); }

// `chunks` chunks of one weight block (16 rows) as ±1 bytes in tile order: out[chunk][16][64].
__attribute__((target("avx512f,avx512bw"))) inline void amx_expand_block(const uint64_t* words, int64_t chunks,
                                                                         int8_t* out) {
  const __m512i plus = _mm512_set1_epi8(1), minus = _mm512_set1_epi8(-1);
  for (int64_t i = 0; i < chunks * 16; ++i)
    _mm512_storeu_si512(out + i * 64, _mm512_mask_blend_epi8(words[i], minus, plus));
}

// C[32][ldc] (int32) += A rows [32][lda] · B blocks (two, `bstride` bytes apart, each `chunks` × 1 KB) for 32
// columns, over `chunks` chunks of 64 inputs; C starts from zero when `first`.
__attribute__((target("amx-tile,amx-int8"))) inline void amx_tile_32x32(const uint8_t* a, int64_t lda,
                                                                        const int8_t* b, int64_t bstride,
                                                                        int64_t chunks, int32_t* c, int64_t ldc,
                                                                        bool first) {
  if (first) {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
  } else {
    _tile_loadd(0, c, ldc * 4);
    _tile_loadd(1, c + 16, ldc * 4);
    _tile_loadd(2, c + 16 * ldc, ldc * 4);
    _tile_loadd(3, c + 16 * ldc + 16, ldc * 4);
  }
  for (int64_t k = 0; k < chunks; ++k) {
    _tile_loadd(4, a + 64 * k, lda);
    _tile_loadd(5, a + 16 * lda + 64 * k, lda);
    _tile_loadd(6, b + 1024 * k, 64);
    _tile_loadd(7, b + bstride + 1024 * k, 64);
    _tile_dpbusd(0, 4, 6);
    _tile_dpbusd(1, 4, 7);
    _tile_dpbusd(2, 5, 6);
    _tile_dpbusd(3, 5, 7);
  }
  _tile_stored(0, c, ldc * 4);
  _tile_stored(1, c + 16, ldc * 4);
  _tile_stored(2, c + 16 * ldc, ldc * 4);
  _tile_stored(3, c + 16 * ldc + 16, ldc * 4);
}

// The GEMM: u8 inputs a [M rows padded to a multiple of 32][lda] bytes (zero past K), weights in the amx layout;
// raw = Σ u·b. Per item (64 columns × a row chunk) K runs in slices of kAmxSlice chunks: a slice of the item's 4
// weight blocks is expanded (16 KB) and used by every row block of the chunk, whose sums stay in the item's int32
// buffer between slices. (Meant to keep the tile loads in L1 — 2.4 T MACs/s there against 1.4–1.6 T from L2 in a
// micro-benchmark — but slices of 2, 4, 8 or all of K measured the same in the whole GEMM.)
constexpr int64_t kAmxSlice = 4;
__attribute__((target("amx-tile,amx-int8,avx512f,avx512bw"))) void amx_gemm(int64_t M, int64_t N,
                                                                           const uint8_t* a, int64_t lda, int64_t K,
                                                                           const uint64_t* w, const Epilogue& e,
                                                                           int nthreads) {
  const int64_t chunks = amx_chunks(K), nchunks = (N + 63) / 64;
  const int64_t mchunks = std::max<int64_t>(1, (M + kAmxRowChunk - 1) / kAmxRowChunk), items = nchunks * mchunks;
  StealingRanges ranges(items, nthreads > 1 && items > 1 ? nthreads : 1);
#pragma omp parallel num_threads(nthreads) if (nthreads > 1 && items > 1)
  {
    static thread_local std::vector<uint64_t> buffer;  // a slice of 4 expanded weight blocks, then the item's sums
    const size_t bytes = (size_t)(4 * kAmxSlice * 1024 + (kAmxRowChunk + 32) * 64 * 4 + 64);
    if (buffer.size() * 8 < bytes) buffer.resize(bytes / 8 + 1);
    int8_t* wb = reinterpret_cast<int8_t*>((reinterpret_cast<uintptr_t>(buffer.data()) + 63) & ~(uintptr_t)63);
    int32_t* raw = reinterpret_cast<int32_t*>(wb + 4 * kAmxSlice * 1024);
    alignas(64) float row[64];
    amx_begin();
    int k = 0;
    for (int64_t item; (item = ranges.claim(k)) >= 0;) {
      const int64_t nc = item / mchunks, mc = item % mchunks;
      const int64_t m_begin = M * mc / mchunks / 32 * 32;
      const int64_t m_end = mc + 1 == mchunks ? M : M * (mc + 1) / mchunks / 32 * 32;
      const int64_t n0 = nc * 64, count = std::min<int64_t>(64, N - n0);
      for (int64_t c0 = 0; c0 < chunks; c0 += kAmxSlice) {
        const int64_t sc = std::min(kAmxSlice, chunks - c0);
        for (int j = 0; j < 4; ++j)
          amx_expand_block(w + ((nc * 4 + j) * chunks + c0) * 16, sc, wb + j * sc * 1024);
        for (int64_t m = m_begin; m < m_end; m += 32) {
          const uint8_t* am = a + m * lda + 64 * c0;
          int32_t* c = raw + (m - m_begin) * 64;
          amx_tile_32x32(am, lda, wb, sc * 1024, sc, c, 64, c0 == 0);
          amx_tile_32x32(am, lda, wb + 2 * sc * 1024, sc * 1024, sc, c + 32, 64, c0 == 0);
        }
      }
      for (int64_t m = m_begin; m < m_end; m += 32) {
        int32_t* c = raw + (m - m_begin) * 64;
        const int rows = (int)std::min<int64_t>(32, m_end - m);
        finish_rows(e, m, rows, n0, count, c, 64, row);
      }
    }
    amx_end();
  }
}

// The AMX tile rate (popcount_rate kind 2, the W1 × u8 GEMM's floor on this path): 32 × 32 blocks over 8 chunks of
// 64 inputs (32 `tdpbusd`, 524,288 u8 × s8 MACs per call) on L1-resident operands until omp_get_wtime() ≥ until;
// returns the calls made by this thread.
__attribute__((target("amx-tile,amx-int8,avx512f,avx512bw"))) int64_t amx_rate_calls(double until) {
  constexpr int64_t chunks = 8;
  alignas(64) static thread_local uint8_t a[32 * chunks * 64];
  alignas(64) static thread_local int8_t b[2 * chunks * 1024];
  alignas(64) int32_t c[32 * 32];
  for (int64_t i = 0; i < (int64_t)sizeof(a); ++i) a[i] = (uint8_t)(i * 37 % 251);
  for (int64_t i = 0; i < (int64_t)sizeof(b); ++i) b[i] = (int8_t)((i * 13 % 7) & 1 ? 1 : -1);
  amx_begin();
  int64_t calls = 0;
  while (omp_get_wtime() < until) {
    for (int r = 0; r < 64; ++r) amx_tile_32x32(a, chunks * 64, b, chunks * 1024, chunks, c, 32, true);
    calls += 64;
  }
  amx_end();
  return calls;
}
constexpr double kAmxRateMacsPerCall = 32.0 * 32 * 64 * 8;

#endif  // x86-64
