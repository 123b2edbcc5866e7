// C-level test of the kernel core (hf_binary_bert/kernels/csrc/bitgemm.cpp without its Python bindings): every
// instruction set this CPU runs (portable, and avx2 / avx512 / ... on x86-64 or neon on aarch64) must reproduce the
// outputs of the pure-PyTorch reference twins stored in tests/native/vectors.bin (written by make_vectors.py) bit for
// bit, with 1 and 2 threads; and each vector ISA must equal the portable path on problems too large to store
// (counter flushes of the NEON kernels: > 4095 words per row, > 128 u8 steps).
//
//   g++ -std=c++17 -O2 -ffp-contract=off [-fopenmp] -I hf_binary_bert/kernels/csrc tests/native/test_kernels_main.cpp
//   ./a.out tests/native/vectors.bin            (tests/native/run_aarch64.sh: cross-compiled, under qemu-aarch64)
#define HF_BITGEMM_NO_PYTHON
#pragma GCC diagnostic ignored "-Wunused-function"  // the Python-facing helpers this test does not call
#include "bitgemm.cpp"

#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>

namespace {

struct Case {
  int kind, M, K, N, a, b, dynamic, flags;
  float step, thr;
  std::vector<float> x, alpha, gamma, bias, shift, expected;
  std::vector<uint8_t> packed;
};

template <class T>
bool read(FILE* f, std::vector<T>& v, size_t n) {
  v.resize(n);
  return std::fread(v.data(), sizeof(T), n, f) == n;
}

bool load(const char* path, std::vector<Case>& cases) {
  FILE* f = std::fopen(path, "rb");
  if (!f) return false;
  char magic[8];
  int32_t count = 0;
  bool ok = std::fread(magic, 1, 8, f) == 8 && std::memcmp(magic, "HFBV0001", 8) == 0 && std::fread(&count, 4, 1, f) == 1;
  for (int i = 0; ok && i < count; ++i) {
    Case c;
    int32_t head[8];
    float fl[2];
    ok = std::fread(head, 4, 8, f) == 8 && std::fread(fl, 4, 2, f) == 2;
    if (!ok) break;
    c.kind = head[0], c.M = head[1], c.K = head[2], c.N = head[3], c.a = head[4], c.b = head[5];
    c.dynamic = head[6], c.flags = head[7], c.step = fl[0], c.thr = fl[1];
    ok = read(f, c.x, (size_t)c.M * c.K) && read(f, c.packed, (size_t)c.N * ((c.K + 7) / 8)) && read(f, c.alpha, c.N) &&
         (!(c.flags & 2) || read(f, c.gamma, c.N)) && (!(c.flags & 4) || read(f, c.bias, c.N)) &&
         (!(c.flags & 1) || read(f, c.shift, c.K)) && read(f, c.expected, (size_t)c.M * c.N);
    cases.push_back(std::move(c));
  }
  std::fclose(f);
  return ok;
}

const float* opt(const std::vector<float>& v) { return v.empty() ? nullptr : v.data(); }

std::vector<int32_t> weight_sums(const std::vector<uint8_t>& packed, int64_t N, int64_t K) {  // as py_row_sums
  const int64_t ld = (K + 7) / 8;
  std::vector<int32_t> out(N);
  for (int64_t n = 0; n < N; ++n) {
    int64_t c = 0;
    for (int64_t i = 0; i < ld; i += 8) c += __builtin_popcountll(load_u64(packed.data() + n * ld + i, ld - i));
    out[n] = (int32_t)(2 * c - K);
  }
  return out;
}

// y of one case on the current g_isa (the Python bindings' arguments: ops.bind_w1a1 / bind_w1a8)
std::vector<float> run_case(const Case& c, int nthreads) {
  std::vector<float> y((size_t)c.M * c.N, NAN);
  if (c.kind == 0) {
    std::vector<uint64_t> w((c.N + kBitsGroup - 1) / kBitsGroup * bits_words(c.K) * kBitsGroup);
    repack_bits(c.packed.data(), c.N, c.K, w.data());
    run_w1a1(c.x.data(), c.M, c.K, c.K, opt(c.shift), c.step, c.thr, c.a, w.data(), c.N, c.alpha.data(), opt(c.gamma),
             c.b ? c.step : 1.0f, opt(c.bias), y.data(), c.N, nthreads);
  } else {
    std::vector<uint64_t> w(nib_layout_words(c.N, c.K));  // as repack "nib" makes it: with the lut6 index
    repack_nib_layout(c.packed.data(), c.N, c.K, w.data());
    const std::vector<int32_t> sums = weight_sums(c.packed, c.N, c.K);
    std::vector<uint64_t> amx;  // on avx512_amx the plan's amx layout (64-byte aligned), as the runtime passes it
    const uint64_t* amx_words = nullptr;
#if defined(__x86_64__) || defined(_M_X64)
    if (g_isa == AVX512_AMX) {
      amx.resize(amx_layout_words(c.N, c.K) + 8);
      uint64_t* aligned = reinterpret_cast<uint64_t*>((reinterpret_cast<uintptr_t>(amx.data()) + 63) & ~(uintptr_t)63);
      amx_layout(c.packed.data(), c.N, c.K, aligned, 1);
      amx_words = aligned;
    }
#endif
    run_w1a8(c.x.data(), c.M, c.K, c.K, opt(c.shift), c.step, c.a, c.b, c.dynamic != 0, w.data(), c.N, sums.data(),
             c.alpha.data(), opt(c.gamma), opt(c.bias), y.data(), c.N, nthreads, false,
             reinterpret_cast<const uint8_t*>(w.data() + lut6_offset_words(c.N, c.K)), amx_words);
  }
  return y;
}

int compare(const std::string& what, const std::vector<float>& got, const std::vector<float>& want) {
  int bad = 0;
  for (size_t i = 0; i < want.size(); ++i)
    if (std::memcmp(&got[i], &want[i], 4) != 0 && bad++ < 3)
      std::printf("  MISMATCH %s at %zu: got %.9g want %.9g\n", what.c_str(), i, got[i], want[i]);
  return bad;
}

// A random problem too large to store: each vector ISA against the portable path.
int large_case(int kind, int64_t M, int64_t K, int64_t N, const std::vector<int>& isas) {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  Case c;
  c.kind = kind, c.M = (int)M, c.K = (int)K, c.N = (int)N, c.a = kind == 0 ? SIGNED : 0, c.b = kind == 0 ? 1 : 255;
  c.dynamic = 0, c.flags = 0, c.step = kind == 0 ? 0.5f : 0.03125f, c.thr = 0.0f;
  c.x.resize(M * K);
  for (float& v : c.x) v = kind == 0 ? normal(rng) : std::fabs(normal(rng)) * 2.0f;
  c.packed.resize(N * ((K + 7) / 8));
  for (uint8_t& v : c.packed) v = (uint8_t)rng();
  if (K % 8) for (int64_t n = 0; n < N; ++n) c.packed[n * ((K + 7) / 8) + K / 8] &= (uint8_t)((1 << (K % 8)) - 1);
  c.alpha.assign(N, 0.75f);
  c.gamma.assign(N, 0.125f);
  g_isa = PORTABLE;
  const std::vector<float> want = run_case(c, 1);
  int bad = 0;
  for (int isa : isas) {
    if (isa == PORTABLE) continue;
    g_isa = isa;
    const std::string what = std::string(kind == 0 ? "w1a1" : "w1a8") + " large K=" + std::to_string(K) + " isa=" + kIsaNames[isa];
    const int b = compare(what, run_case(c, 1), want);
    std::printf("%s %s\n", b ? "FAIL" : "ok  ", what.c_str());
    bad += b;
  }
  return bad;
}

// The runtime-only packing modes (SIGNED_SCALED: BiT's elastic 1-bit Q/K/V; SIGNED_GELU: GELU folded into two
// thresholds per channel) on each vector ISA against the scalar packing, on rows with tails, zeros, −0 and
// values on the thresholds, whole rows and chunks of a row (hi = the full row length).
int pack_modes_case(const std::vector<int>& isas) {
  std::mt19937 rng(11);
  std::normal_distribution<float> normal;
  const int64_t K = 203;
  std::vector<float> row(K), thresholds(2 * K);
  for (int64_t k = 0; k < K; ++k) {
    thresholds[k] = -1.5f + 0.01f * normal(rng);  // lo
    thresholds[K + k] = -0.2f + 0.01f * normal(rng);  // hi
    const int pick = (int)(rng() % 6);
    row[k] = pick == 0 ? thresholds[k] : pick == 1 ? thresholds[K + k] : pick == 2 ? (rng() % 2 ? 0.0f : -0.0f)
           : pick == 3 ? 1e-42f * (rng() % 2 ? 1.0f : -1.0f) : 2.0f * normal(rng);
  }
  int bad = 0;
  for (int mode : {SIGNED_SCALED, SIGNED_GELU})
    for (int64_t from : {(int64_t)0, (int64_t)16, (int64_t)64}) {  // a chunk starting at column `from`
      const int64_t n = K - from;
      const float* shift = mode == SIGNED_GELU ? thresholds.data() + from : nullptr;
      std::vector<uint8_t> want((n + 7) / 8 + 1, 0), got;
      const int64_t want_count = pack_row_scalar(row.data() + from, 0, n, shift, 0.37f, 0.0f, mode, want.data(), K);
      for (int isa : isas) {
        got.assign(want.size(), 0);
        const int64_t count = pack_row_isa(isa, row.data() + from, n, shift, 0.37f, 0.0f, mode, got.data(), K);
        const bool ok = count == want_count && got == want;
        std::printf("%s pack mode %d from %lld isa=%s\n", ok ? "ok  " : "FAIL", mode, (long long)from, kIsaNames[isa]);
        bad += !ok;
      }
    }
  return bad;
}

// finish_rows (one fused call per tile of rows on the AVX2 and AVX-512 paths) against finish_row row by row: every
// packing mode and the float output, mul = ±2, with and without γ, bias, per-row scales and add_m, chunks of 8 … 192
// columns starting at n0 = 0 or 64 (8 columns: the AVX-512 path falls back to finish_row); some outputs are +0 and
// −0 (a zero α or γ).
int finish_rows_case(int isa) {
#if defined(__x86_64__) || defined(_M_X64)
  if (!isa_supported(isa)) return 0;
  const int saved = g_isa;
  g_isa = isa;
  std::mt19937 rng(5);
  std::normal_distribution<float> normal;
  const int64_t M = 4, N = 256;
  std::vector<float> alpha(N), gamma(N), bias(N), shift(2 * N), in_scale(M);
  std::vector<int64_t> xsum(M), add_m(M);
  for (int64_t n = 0; n < N; ++n) {
    alpha[n] = n % 7 == 0 ? -0.0f : 0.05f * normal(rng);  // −0·dot, + a −0 γ·x̄ term: outputs of −0
    gamma[n] = n % 11 == 0 ? 0.0f : 0.01f * normal(rng);
    bias[n] = n % 5 == 0 ? -0.0f : 0.1f * normal(rng);
    shift[n] = n % 3 == 0 ? 0.0f : 0.2f * normal(rng);
    shift[N + n] = shift[n] + 0.5f;
  }
  for (int64_t m = 0; m < M; ++m) in_scale[m] = 0.5f + 0.1f * (float)m, xsum[m] = 3 - 2 * m, add_m[m] = 7 - 5 * m;
  std::vector<int32_t> raw(M * N);
  for (auto& r : raw) r = (int32_t)(rng() % 9) - 4;
  int bad = 0;
  for (int mode : {-1, (int)SIGNED, (int)UNSIGNED_GE, (int)UNSIGNED_GT, (int)SIGNED_GELU, (int)SIGNED_SCALED})
    for (int flags = 0; flags < 16; ++flags)
      for (int64_t n0 : {(int64_t)0, (int64_t)64})
        for (int64_t count : {(int64_t)8, (int64_t)16, (int64_t)64, (int64_t)192}) {
          Epilogue e{};
          e.mul = flags & 8 ? -2 : 2;
          e.add_m = flags & 8 ? add_m.data() : nullptr;
          e.alpha = alpha.data();
          e.gamma = flags & 1 ? gamma.data() : nullptr;
          e.bias = flags & 2 ? bias.data() : nullptr;
          e.in_scale = flags & 4 ? in_scale.data() : nullptr;
          e.scale = 0.75f;
          e.xsum = xsum.data();
          e.pack_ld = N / 8;
          e.pack_shift = mode == SIGNED_GELU || flags & 1 ? shift.data() : nullptr;
          e.pack_s = 0.37f, e.pack_thr = 0.25f, e.pack_mode = mode < 0 ? 0 : mode, e.pack_n = N;
          std::vector<float> out_a(M * N, 9.0f), out_b(M * N, 9.0f);
          std::vector<uint8_t> bits_a(M * N / 8, 0), bits_b(M * N / 8, 0);
          std::vector<int64_t> pop_a(M * N / 64, 0), pop_b(M * N / 64, 0);
          auto run = [&](bool fused, std::vector<float>& out, std::vector<uint8_t>& bits, std::vector<int64_t>& pop) {
            Epilogue f = e;
            f.out = out.data(), f.ldo = N;
            f.pack_bits = mode < 0 ? nullptr : bits.data(), f.pack_pop = pop.data();
            alignas(64) float scratch[256];
            if (fused)
              finish_rows(f, 0, (int)M, n0, count, raw.data() + n0, N, scratch);
            else
              for (int64_t m = 0; m < M; ++m) finish_row(f, m, n0, count, raw.data() + n0 + m * N, scratch);
          };
          run(true, out_a, bits_a, pop_a);
          run(false, out_b, bits_b, pop_b);
          const bool ok = std::memcmp(out_a.data(), out_b.data(), out_a.size() * 4) == 0 && bits_a == bits_b &&
                          pop_a == pop_b;
          if (!ok) std::printf("FAIL finish_rows mode %d flags %d n0 %lld count %lld\n", mode, flags, (long long)n0,
                               (long long)count);
          bad += !ok;
        }
  std::printf("%s finish_rows (fused, %s) equals finish_row row by row\n", bad ? "FAIL" : "ok  ", kIsaNames[isa]);
  g_isa = saved;
  return bad;
#else
  return 0;
#endif
}

// The 1-bit attention's AVX2 popcount loops (xor_popcounts_avx2: Q·K per key; and_popcounts_avx2: A·V per
// dimension) against scalar popcounts, on counts of keys and dimensions with and without a tail of < 8; and
// xor_popcounts_avx512 where the CPU has VPOPCNTDQ (its last n mod 16 keys stored as one vector of 16).
int attention_counts_case() {
#if defined(__x86_64__) || defined(_M_X64)
  if (!isa_supported(AVX2)) return 0;
  std::mt19937_64 rng(3);
  std::vector<uint64_t> words(4 * 300);
  for (auto& w : words) w = rng() & rng();  // about a quarter of the bits set
  words[5] = ~0ull, words[6] = 0;
  int bad = 0;
  for (int64_t n : {0, 1, 7, 8, 9, 64, 131}) {
    std::vector<int32_t> got(n + 1, -1);
    const uint64_t q = rng();
    xor_popcounts_avx2(q, words.data(), n, got.data());
    for (int64_t j = 0; j < n; ++j) bad += got[j] != __builtin_popcountll(q ^ words[j]);
    bad += got[n] != -1;  // nothing written past n
    if (isa_supported(AVX512_VPOPCNT)) {  // the last n mod 16 keys in one 16-lane store: up to round_up(n, 16)
      const int64_t n16 = (n + 15) / 16 * 16;
      std::vector<int32_t> wide(n16 + 1, -1);
      xor_popcounts_avx512(q, words.data(), n, wide.data());
      for (int64_t j = 0; j < n; ++j) bad += wide[j] != __builtin_popcountll(q ^ words[j]);
      for (int64_t j = n; j < n16; ++j) bad += wide[j] != __builtin_popcountll(q);  // (masked-off keys read as 0)
      bad += wide[n16] != -1;  // nothing written past round_up(n, 16)
    }
  }
  for (int64_t D : {1, 8, 13, 64, 70})
    for (int64_t tw : {1, 2, 3}) {
      const int64_t Dp = (D + 15) / 16 * 16;
      std::vector<int32_t> got(D + 1, -1);
      const uint64_t* arow = words.data() + 1000;
      and_popcounts_avx2(arow, tw, words.data(), Dp, D, got.data());
      for (int64_t d = 0; d < D; ++d) {
        int32_t want = 0;
        for (int64_t w = 0; w < tw; ++w) want += __builtin_popcountll(arow[w] & words[w * Dp + d]);
        bad += got[d] != want;
      }
      bad += got[D] != -1;
    }
  std::printf("%s attention popcounts (avx2%s) equal scalar popcounts\n", bad ? "FAIL" : "ok  ",
              isa_supported(AVX512_VPOPCNT) ? ", avx512_vpopcnt" : "");
  return bad;
#else
  return 0;
#endif
}


// BiT's per-distinct-score rows of 1-bit probabilities (bit_softmax_rows_avx2, and bit_softmax_rows_avx512 where the
// CPU has AVX-512) against the per-key path they replace (scores (float)(D − 2·ones), scaled_softmax_avx2, bits_row):
// the same bits for rows of 1 … 150 keys (the scalar tail), value ranges that take each lookup (≤ 8, 16, 24, 32
// values: one to four permutes; more: a gather), both probability quantizers, steps where about half the keys are set
// and steps on the edge of a probability; each case as four different rows, one at a time (R = 1) and as one group
// (R = 4: the rows' chains interleaved), whose bits must land in the right row.
int bit_softmax_case() {
#if defined(__x86_64__) || defined(_M_X64)
  if (!isa_supported(AVX2)) return 0;
  const bool avx512 = isa_supported(AVX512);
  std::mt19937_64 rng(5);
  int bad = 0, rows = 0, set = 0, declined = 0;
  for (int64_t D : {64, 37, 8})
    for (int64_t T : {1, 7, 8, 9, 16, 64, 128, 150})
      for (int64_t spread : {3, 8, 12, 16, 24, 32, 40, 65})
        for (int kind : {(int)QK_SIGN_UNSIGNED, (int)QK_LEVELS, (int)QK_LEVELS + 100})
          for (float mul : {0.125f, 0.02f, 1.3f}) {
            const int64_t width = std::min<int64_t>(spread, D + 1);
            std::vector<int32_t> ones[4];
            std::vector<float> row[4];
            for (int r = 0; r < 4; ++r) {  // four rows with their own value ranges
              const int32_t base = (int32_t)(rng() % (uint64_t)(D + 2 - width));
              ones[r].resize(T);
              for (auto& o : ones[r]) o = base + (int32_t)(rng() % (uint64_t)width);
              row[r].resize(T);
              for (int64_t j = 0; j < T; ++j) row[r][j] = (float)((int32_t)D - 2 * ones[r][j]);
              scaled_softmax<true>(row[r].data(), T, mul);
            }
            // a step that puts the threshold between two of the first row's probabilities
            std::vector<float> sorted(row[0]);
            std::sort(sorted.begin(), sorted.end());
            const float mid = sorted[T / 2];
            // (kind QK_LEVELS + 100: QK_LEVELS with the step exactly 2 · a probability, on the edge: a sum of
            // another rounding moves a bit)
            const float step = kind == QK_SIGN_UNSIGNED ? 1.0f : kind == QK_LEVELS ? mid * 1.99f : 2.0f * mid;
            const QuantSpec sp{kind == QK_SIGN_UNSIGNED ? kind : QK_LEVELS, nullptr, step, 0.0f, 1.0f};
            uint64_t want[4][3] = {}, got[4][3];
            const int32_t* os[4];
            uint64_t* gs[4];
            for (int r = 0; r < 4; ++r) {
              bits_row<true>(sp, row[r].data(), nullptr, T, want[r]);
              os[r] = ones[r].data();
              gs[r] = got[r];
            }
            for (int variant = 0; variant < (avx512 ? 4 : 2); ++variant) {  // avx2 R = 1, 4; avx512 R = 1, 4
              bool done[4];
              std::memset(got, 0xA5, sizeof got);  // (words past the row's must stay as they were: not compared)
              if (variant == 0)
                for (int r = 0; r < 4; ++r) bit_softmax_rows_avx2<1>(os + r, T, D, mul, sp, gs + r, done + r);
              else if (variant == 1)
                bit_softmax_rows_avx2<4>(os, T, D, mul, sp, gs, done);
              else if (variant == 2)
                for (int r = 0; r < 4; ++r) bit_softmax_rows_avx512<1>(os + r, T, D, mul, sp, gs + r, done + r);
              else
                bit_softmax_rows_avx512<4>(os, T, D, mul, sp, gs, done);
              for (int r = 0; r < 4; ++r) {
                if (!done[r]) {
                  ++declined;
                  continue;
                }
                ++rows;
                for (int64_t w = 0; w * 64 < T; ++w) {
                  bad += got[r][w] != want[r][w];
                  set += __builtin_popcountll(want[r][w]);
                }
              }
            }
          }
  bad += declined;  // (mul > 0: the set values are always a prefix)
  std::printf("%s per-value BiT softmax bits (avx2%s, 1 and 4 rows at once) equal the per-key path: %d rows, %d bits "
              "set\n",
              bad ? "FAIL" : "ok  ", avx512 ? ", avx512" : "", rows, set);
  return bad || set == 0;
#else
  return 0;
#endif
}


// The AVX2 table GEMM's tile (BitsAvx2PairTable: two input rows per lookup, 4-bit counters folded into byte sums
// every 3 steps, decoded every 63 steps) and its input offsets (nibble_pair_offsets4) against scalar popcounts, for XNOR
// and AND, K of 4 … 52 words (step counts with 0, 1 and 2 steps left over from the groups of 3, and several
// flushes), 1, 3 and 4 real input rows (padding rows count as 0), all-ones inputs and weights (the largest counts).
int pair_table_case() {
#if defined(__x86_64__) || defined(_M_X64)
  if (!isa_supported(AVX2)) return 0;
  std::mt19937_64 rng(7);
  int bad = 0, checked = 0;
  for (int64_t kw : {4, 8, 12, 16, 48, 52})
    for (int op = 0; op < 2; ++op)
      for (int rows : {4, 3, 1})
        for (int ones : {0, 1}) {
          const int64_t steps = 16 * kw, bstride = steps * 32;
          std::vector<uint64_t> a(4 * kw);
          for (auto& x : a) x = ones ? ~0ull : rng();
          std::vector<uint8_t> wbuf(2 * bstride + 32);
          uint8_t* wi = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(wbuf.data()) + 31) & ~(uintptr_t)31);
          for (int64_t i = 0; i < 2 * bstride; ++i) wi[i] = ones ? 15 : (uint8_t)(rng() % 16);
          std::vector<uint16_t> ao(2 * steps + 16);
          nibble_pair_offsets4(a.data(), kw, rows, ao.data());
          std::vector<int32_t> out(4 * 64, -1);
          BitsAvx2PairTable::tile<4, 2>(ao.data(), wi, bstride, steps, &kPairTables.t[op][0][0], out.data(), 64);
          for (int i = 0; i < 4; ++i)
            for (int c = 0; c < 64; ++c) {
              int32_t want = 0;
              for (int64_t st = 0; st < steps && i < rows; ++st) {
                const int v = (int)((a[i * kw + st / 16] >> (4 * (st % 16))) & 15);
                const int x = wi[(c / 32) * bstride + st * 32 + c % 32];
                want += __builtin_popcount(op == 0 ? v ^ x : v & x);
              }
              // padding rows read nibble 0: popcount(0 XOR x) for XNOR, 0 for AND
              if (i >= rows)
                for (int64_t st = 0; st < steps; ++st)
                  want += op == 0 ? __builtin_popcount(wi[(c / 32) * bstride + st * 32 + c % 32]) : 0;
              bad += out[i * 64 + c] != want;
              ++checked;
            }
        }
  std::printf("%s AVX2 pair-table tile equals scalar popcounts: %d outputs\n", bad ? "FAIL" : "ok  ", checked);
  return bad;
#else
  return 0;
#endif
}

// Philox4x32-10 against Random123's published known answers (its tests/kat_vectors) under every instruction set this
// CPU runs (each answer in a different lane of the 16, the other lanes' counters arbitrary), the mask bits against
// the outputs, and dropout_kept's mask the same for every instruction set and for 1 and 2 threads, over a size that
// is not a multiple of 4 and spans several chunks.
int philox_case() {
  struct Kat {
    uint32_t c[4], k[2], want[4];
  } kats[] = {
      {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}},
      {{~0u, ~0u, ~0u, ~0u}, {~0u, ~0u}, {0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}},
      {{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}, {0xa4093822u, 0x299f31d0u},
       {0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}},
  };
  std::vector<int> isas;
  for (int i = PORTABLE; i <= NEON; ++i)
    if (isa_supported(i)) isas.push_back(i);
  int bad = 0, runs = 0;
  const uint32_t threshold = 0x80000000u;
  for (int isa : isas)
    for (int lane = 0; lane < kPhiloxLanes; lane += 5)
      for (const Kat& t : kats) {
        uint32_t w[4][kPhiloxLanes];
        for (int j = 0; j < 4; ++j)
          for (int l = 0; l < kPhiloxLanes; ++l) w[j][l] = l == lane ? t.c[j] : 0x9E3779B9u * (uint32_t)(l + 4 * j);
        uint16_t below[4];
        philox4x32_10_x16(isa, w, t.k[0], t.k[1], threshold, below);
        for (int j = 0; j < 4; ++j) {
          bad += w[j][lane] != t.want[j];
          for (int l = 0; l < kPhiloxLanes; ++l) bad += ((below[j] >> l) & 1) != (w[j][l] < threshold);
        }
        ++runs;
      }
  const int64_t n = 4 * kDropoutChunk * 3 + 7;
  const int saved = g_isa;
  g_isa = PORTABLE;
  std::vector<uint8_t> portable(n, 5);
  dropout_kept(0x0123456789abcdefull, n, 3865470566u, portable.data(), 1);
  int64_t kept = 0;
  for (int64_t i = 0; i < n; ++i) kept += portable[i], bad += portable[i] > 1;
  for (int isa : isas) {
    g_isa = isa;
    std::vector<uint8_t> one(n, 7), two(n, 9);
    dropout_kept(0x0123456789abcdefull, n, 3865470566u, one.data(), 1);
    dropout_kept(0x0123456789abcdefull, n, 3865470566u, two.data(), 2);
    bad += one != portable || two != portable;
  }
  g_isa = saved;
  const double rate = (double)kept / n;  // 0.9 ± 5 standard deviations (σ ≈ 0.0005 here)
  bad += rate < 0.9 - 0.003 || rate > 0.9 + 0.003;
  std::printf("%s Philox4x32-10 known answers (%d runs over %zu instruction sets); dropout mask the same for every "
              "instruction set and thread count, keep rate %.4f\n",
              bad ? "FAIL" : "ok  ", runs, isas.size(), rate);
  return bad;
}

}  // namespace

int main(int argc, char** argv) {
  const char* path = argc > 1 ? argv[1] : "tests/native/vectors.bin";
  std::vector<Case> cases;
  if (!load(path, cases)) {
    std::printf("cannot read test vectors %s\n", path);
    return 2;
  }
  std::vector<int> isas;
  for (int i = 0; i < kIsaCount; ++i)
    if (isa_supported(i)) isas.push_back(i);
#if defined(_OPENMP)
  const char* omp = "OpenMP";
#else
  const char* omp = "no OpenMP";
#endif
  std::printf("%zu cases from %s; default isa %s; %s; isas:", cases.size(), path, kIsaNames[best_isa()], omp);
  for (int i : isas) std::printf(" %s", kIsaNames[i]);
  std::printf("\n");
  int failures = 0, checked = 0;
  for (int isa : isas) {
    g_isa = isa;
    for (size_t i = 0; i < cases.size(); ++i)
      for (int threads : {1, 2}) {
        const Case& c = cases[i];
        char what[160];
        std::snprintf(what, sizeof what, "%s case %zu (M=%d K=%d N=%d) isa=%s threads=%d", c.kind ? "w1a8" : "w1a1", i,
                      c.M, c.K, c.N, kIsaNames[isa], threads);
        const int bad = compare(what, run_case(c, threads), c.expected);
        if (bad) std::printf("FAIL %s: %d of %zu outputs differ\n", what, bad, c.expected.size());
        failures += bad != 0;
        ++checked;
      }
  }
  std::printf("%d of %d (case, isa, threads) runs equal the reference bit for bit\n", checked - failures, checked);
  failures += large_case(0, 3, 4100 * 64 + 5, 9, isas) != 0;  // 4101 words per row: the u16 counters flush once
  failures += large_case(1, 3, 4 * 300 + 3, 37, isas) != 0;   // 301 u8 steps: flushes at 128 and 256
  failures += large_case(1, 70, 837, 150, isas) != 0;  // AMX: two 32-row blocks and a 6-row tail, 22 leftover columns
  failures += pack_modes_case(isas) != 0;
  for (int isa : {(int)AVX2, (int)AVX512, (int)AVX512_VPOPCNT}) failures += finish_rows_case(isa) != 0;
  failures += attention_counts_case() != 0;
  failures += bit_softmax_case() != 0;
  failures += pair_table_case() != 0;
  failures += philox_case() != 0;
  std::printf("%s\n", failures ? "FAILED" : "PASSED");
  return failures ? 1 : 0;
}
