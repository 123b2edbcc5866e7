// Bitwise kernels of hf_binary_bert: y = x · W_qᵀ + b for a Linear whose weight is W_q = α·B + γ, B ∈ {−1,+1}^{N×K}
// held as packed bits (the checkpoint layout: uint8 [N, ceil(K/8)], bit j of byte k of row n = B[n, 8k+j] = +1,
// least significant bit first, padding bits 0). That layout is already "packed along the reduction dimension", so
// the kernels read the checkpoint buffer as it is: no repacking, no second copy of the weights.
//
// Two fused operations, each quantizing its float input itself into a reused per-thread scratch buffer:
//   w1a1_linear: input bits a (sign of x − β, or 1[x ≥ ½] / 1[(x − β)/s > ½] for non-negative inputs), then
//                XNOR-popcount (±1 inputs: a·b = K − 2·popcount(a XOR b)) or AND-popcount ({0,1} inputs:
//                a·b = 2·popcount(a AND b) − popcount(a)).
//   w1a8_linear: input integers q = round(clip((x − β)/s, Q_n, Q_p)) (LSQ / BiT), or per-row dynamic
//                s_m = max|x_m| / 127, stored as u8 u = q + z; then Σ_k u_k·b_k − z·Σ_k b_k (lookup tables of
//                input sums for M ≥ 4 rows: 4-bit tables and vpshufb on AVX2, 6-bit tables and vpermi2w on AVX-512BW,
//                lut_gemm.h; for fewer rows VNNI vpdpbusd with the ±1 bytes blended from the weight bits).
// Epilogue (fused): y[m,n] = s_m · (α_n · dot[m,n] + γ_n · Σ_k q[m,k]) + bias_n.
//
// Instruction sets are chosen at run time from the CPU (cpu_features()):
//   avx512_vpopcnt (VPOPCNTDQ), avx512 (AVX-512BW: nibble-table popcount, VNNI when present), avx2, portable (C).
// Threads: OpenMP, with the count given by the caller (torch.get_num_threads()). Built by the package's own
// setup.py; it includes no torch header (it sees raw pointers only).

// Platforms: x86-64 (the AVX2 / AVX-512 paths below, each under `#if defined(__x86_64__) || defined(_M_X64)`) and
// aarch64 (NEON paths, ISA "neon", under `#if defined(__aarch64__)`); elsewhere the portable C paths only. OpenMP
// is optional (without it every call runs on the calling thread). HF_BITGEMM_NO_PYTHON compiles the kernel core
// without the Python bindings (tests/native/test_kernels_main.cpp includes this file that way).

#ifndef HF_BITGEMM_NO_PYTHON
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#endif

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#include <immintrin.h>
#endif
#if defined(__aarch64__)
#include <arm_neon.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#else  // no OpenMP: the `#pragma omp` lines are ignored and every call runs on the calling thread
#pragma GCC diagnostic ignored "-Wunknown-pragmas"
#include <chrono>
inline int omp_get_thread_num() { return 0; }
inline double omp_get_wtime() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
#endif

#if defined(__linux__)
#include <linux/futex.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include <algorithm>
#include <atomic>
#include <thread>
#include <type_traits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <vector>

// A parallel region's threads on distinct CPUs. On a VM whose idle vCPU the host has descheduled, Linux counts that
// vCPU as busy ("preempted") and may wake an OpenMP worker onto the CPU of the thread that opened the region; the two
// then share one CPU while the other sits idle, and a thread spinning at the region's barrier holds up the one queued
// behind it for milliseconds. caller_cpu() is read by the opening thread before the region; spread_team(cpu), called
// by every thread first thing in the region, moves a worker found on that CPU to another CPU of its affinity mask
// (allowing every CPU but that one, which migrates it at once, then its own mask again: nothing stays pinned).
// Linux only; elsewhere nothing. Called in the GEMM driver's and the attention's regions and, through
// spread_threads, at the start of the runtime's native calls; not in the short regions (LayerNorm, input packing,
// the W1 × u8 GEMMs): checks there made a 1 × 128 forward after an idle wait slower in the tail (a move waits for
// the idle vCPU to be scheduled). Measured on a 2-vCPU Intel Xeon VM, BiT W1A1 BERT-base, forwards after 50 ms of
// sleep (benchmarks/build_ab.py --idle 0.05): 1 × 32 0.27–0.33× the time, W1A8 / W1A32-int8 1 × 32 0.46–0.61×,
// 1 × 128 1.00–1.26×; back to back no change (docs/inference.md, "Threads after an idle wait").
inline int caller_cpu() {
#if defined(__linux__) && defined(_OPENMP)
  return sched_getcpu();
#else
  return -1;
#endif
}

inline void spread_team(int cpu) {
#if defined(__linux__) && defined(_OPENMP)
  if (cpu < 0 || omp_get_thread_num() == 0 || sched_getcpu() != cpu) return;
  cpu_set_t mine;
  if (sched_getaffinity(0, sizeof mine, &mine) != 0 || !CPU_ISSET(cpu, &mine)) return;
  cpu_set_t others = mine;
  CPU_CLR(cpu, &others);
  if (CPU_COUNT(&others) > 0 && sched_setaffinity(0, sizeof others, &others) == 0)
    sched_setaffinity(0, sizeof mine, &mine);
#else
  (void)cpu;
#endif
}

// Wake-ahead (Linux with OpenMP). After an idle wait the OpenMP worker sleeps, and on a small VM the CPU under it may
// have been given back to the host: the first parallel region of a forward then waits milliseconds for it (measured
// on an AMD EPYC Zen 4 VM, 2 vCPUs: the embeddings module of a BiT W1A1 BERT-base forward 0.17 ms back to back, 2.9 ms
// after 0.1 s idle; a PyTorch LayerNorm of 32 × 768 alone 0.01 against 7.6 ms; docs/inference.md). So a forward
// starts with `wake()` (the embeddings' native sum, again at the encoder): unless the team ran under kWarmNs ago (its
// worker still spins), it wakes a helper thread of its own, placed on the CPUs other than the caller's, without
// waiting for it, and the forward is "cold": the embeddings (the native sum, and PyTorch's LayerNorm: `cold()`) run
// on the calling thread, and so do the encoder's native regions (`team_now`) until the helper reports that it runs.
// The helper keeps that CPU busy, spinning (yielding), until a region takes the whole team (`ready()`), the eager
// encoder follows instead (`release()`) or kSpinNs pass, then sleeps again: the worker the region wakes finds its CPU
// running. The embeddings never take the team in a cold forward: a PyTorch region (which has no spread_team) could
// have the worker woken onto the caller's CPU while the helper holds the other, and a region there would stop the
// helper's spinning a millisecond of Python before the encoder needs the CPU (both seen in traces: the LayerNorm
// 5 ms, the encoder's first layer on one thread).
// The results do not depend on the thread count (every kernel gives the same bits on 1 and n threads), only the
// time. If the helper has not run kGiveUpNs after a request (a busy machine), or no thread could be started, the
// regions use the team as before; a forked child starts its own helper.
class WakeAhead {
 public:
  static constexpr int64_t kWarmNs = 5000000, kSpinNs = 20000000, kGiveUpNs = 100000000, kMaxRows = 128;

  static WakeAhead& get() {
    static WakeAhead* w = new WakeAhead();  // never destroyed: its thread may outlive static destructors
    return *w;
  }
  static int64_t now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }

  // Called at the start of a forward's native calls with its token rows and the team size they would use; returns
  // whether the forward is cold (see above): the helper was asked now, or earlier in this forward and no region has
  // taken the team since. A forward on one thread asks nothing (no region would stop the helper's spinning), nor one
  // of more than kMaxRows rows: after 0.1 s idle on the Zen 4 VM, 1 × 128 took 0.89–0.94× the time with it, 2 × 128,
  // 4 × 128 and 8 × 128 1.02×, 1.04× and 1.03–1.06× (its one-thread embeddings grow with the rows, the first
  // region's wait for the worker does not).
  bool wake(int64_t rows, int nthreads) {
#if defined(__linux__) && defined(_OPENMP)
    if (nthreads <= 1 || rows > kMaxRows || now_ns() - team_end_.load() < kWarmNs) {
      awake_.store(1);
      if (cold_.exchange(0)) stop_.store(1);  // an earlier forward's request (another thread's): no spinning on
      return false;
    }
    const int pid = (int)getpid();
    int had = pid_.load();
    if (had != pid && pid_.compare_exchange_strong(had, pid)) {  // first request, or a forked child (no helper thread)
      tid_.store(0);
      bell_.store(0);
      requested_at_.store(0);
      spinning_.store(0);
      cold_.store(0);
      mask_lock_.store(0);  // (a forked child: the parent's helper may have held it)
      try {
        std::thread([this] { run(); }).detach();
      } catch (...) {  // no thread to be had: the team as before
        disabled_.store(1);
      }
    }
    if (disabled_.load()) {
      awake_.store(1);
      return false;
    }
    if (cold_.load() && (requested_at_.load() != 0 || spinning_.load())) return true;  // asked already
    const int cpu = sched_getcpu(), tid = tid_.load();
    cpu_set_t mine;
    if (tid > 0 && cpu >= 0 && sched_getaffinity(0, sizeof mine, &mine) == 0) {
      cpu_set_t others = mine;
      CPU_CLR(cpu, &others);
      if (CPU_COUNT(&others) > 0 && sched_setaffinity(tid, sizeof others, &others) == 0) {
        lock_mask();  // the helper may be reading mask_ for an earlier request
        mask_ = mine;  // the helper takes the caller's mask back once it runs: no thread stays pinned
        restore_.store(1);
        unlock_mask();
      }
    }
    awake_.store(0);
    stop_.store(0);
    cold_.store(1);
    requests_.fetch_add(1);
    requested_at_.store(now_ns());
    bell_.store(1);
    syscall(SYS_futex, reinterpret_cast<int*>(&bell_), FUTEX_WAKE_PRIVATE, 1, nullptr, nullptr, 0);
    return true;
#else
    (void)rows;
    (void)nthreads;
    return false;
#endif
  }

  // whether the next region may take the whole team: once the helper runs (or the team is warm, or nothing was
  // requested); not while a request waits (at most kGiveUpNs). True means the caller takes the team now: the forward
  // is no longer cold, the team counts as warm from now on, and the helper stops spinning.
  bool ready() {
#if defined(__linux__) && defined(_OPENMP)
    if (!awake_.load()) {
      const int64_t asked = requested_at_.load();
      if (asked != 0 && now_ns() - asked < kGiveUpNs) return false;
      awake_.store(1);
    }
    cold_.store(0);
    team_end_.store(now_ns());
    stop_.store(1);
#endif
    return true;
  }
  // the threads the next native region may use: nthreads when ready(), else 1
  int team_now(int nthreads) { return nthreads <= 1 || ready() ? nthreads : 1; }
  // whether the current forward is cold (wake() asked the helper and no region has taken the team since)
  bool cold() const { return cold_.load() != 0; }
  // ends a cold forward whose next work is not the native encoder (the eager encoder, whose PyTorch regions take the
  // team as they find it; an error): the helper stops spinning, and the team counts as warm from now on
  void release() {
#if defined(__linux__) && defined(_OPENMP)
    if (cold_.exchange(0)) stop_.store(1);
    team_end_.store(now_ns());
#endif
  }
  // how many times wake() has asked the helper in this process (for the tests); −1 where the wake-ahead is compiled
  // out (not Linux, or no OpenMP)
  int64_t requests() const {
#if defined(__linux__) && defined(_OPENMP)
    return requests_.load();
#else
    return -1;
#endif
  }

 private:
  void run() {
#if defined(__linux__) && defined(_OPENMP)
    tid_.store((int)syscall(SYS_gettid));
    for (;;) {
      while (bell_.load() == 0)
        syscall(SYS_futex, reinterpret_cast<int*>(&bell_), FUTEX_WAIT_PRIVATE, 0, nullptr, nullptr, 0);
      bell_.store(0);
      cpu_set_t mask;
      lock_mask();
      const bool restore = restore_.exchange(0) != 0;
      if (restore) mask = mask_;
      unlock_mask();
      if (restore) sched_setaffinity(0, sizeof mask, &mask);
      spinning_.store(1);
      awake_.store(1);
      requested_at_.store(0);
      const int64_t end = now_ns() + kSpinNs;
      while (!stop_.load(std::memory_order_relaxed) && now_ns() < end) {
        if (!awake_.load(std::memory_order_relaxed)) {  // asked again while still spinning: it is running
          requested_at_.store(0);
          awake_.store(1);
        }
        sched_yield();
      }
      spinning_.store(0);
    }
#endif
  }
#if defined(__linux__) && defined(_OPENMP)
  // mask_ is written by wake() and read by the helper: a spin lock (held for a copy of it) rather than a mutex, so
  // that a forked child can reset it
  void lock_mask() {
    while (mask_lock_.exchange(1, std::memory_order_acquire)) std::this_thread::yield();
  }
  void unlock_mask() { mask_lock_.store(0, std::memory_order_release); }
#endif
  static_assert(sizeof(std::atomic<int>) == sizeof(int), "the futex word is the atomic's int");
  std::atomic<int> pid_{0}, tid_{0}, bell_{0}, awake_{1}, stop_{0}, spinning_{0}, restore_{0}, disabled_{0}, cold_{0};
  std::atomic<int> mask_lock_{0};
#if defined(__linux__) && defined(_OPENMP)
  cpu_set_t mask_;  // written by wake() before it rings, read by the helper after (both under lock_mask)
#endif
  std::atomic<int64_t> requested_at_{0}, team_end_{0}, requests_{0};
};

// spread_team for a native call's team before its work: one empty region, so that the worker is on a CPU of its own
// before the call's first region (the runtime's native calls open with it: the embeddings' sum, the encoder, the
// pooler; each GEMM and attention region checks again, as a worker that slept between two regions wakes wherever
// the scheduler puts it).
inline void spread_threads(int nthreads) {
#if defined(__linux__) && defined(_OPENMP)
  if (nthreads <= 1) return;
  const int cpu = caller_cpu();
#pragma omp parallel num_threads(nthreads)
  spread_team(cpu);
#else
  (void)nthreads;
#endif
}

namespace {

// AVX512_VPOPCNT_EMULATED is the VPOPCNTDQ path with vpopcntq replaced by a nibble-table popcount, so that its
// tiling can be tested on CPUs without VPOPCNTDQ; never chosen automatically and not listed by supported_isas().
// NEON (aarch64 Advanced SIMD, present on every aarch64 CPU) is listed after the x86 sets; no x86 path runs on
// aarch64 and no NEON path on x86-64 (isa_supported).
// AVX512_AMX is avx512_vpopcnt with the W1 × u8 GEMMs (W1A2–W1A8, W1A32 int8) on Intel AMX tiles (amx_gemm.h)
// where the runtime's plan made their "amx" weight layout (elsewhere, e.g. one Linear bound on its own, and for
// every W1A1 GEMM, it runs avx512_vpopcnt's code).
enum Isa { PORTABLE = 0, AVX2 = 1, AVX512 = 2, AVX512_VPOPCNT = 3, AVX512_VPOPCNT_EMULATED = 4, NEON = 5, AVX512_AMX = 6 };
const char* kIsaNames[] = {"portable", "avx2", "avx512", "avx512_vpopcnt", "avx512_vpopcnt_emulated", "neon", "avx512_amx"};
constexpr int kIsaCount = 7, kListedIsas = 4;

// The paths that run avx512_vpopcnt's vpopcntq code.
inline bool vpopcnt_isa(int isa) { return isa == AVX512_VPOPCNT || isa == AVX512_AMX; }

struct Features {
  bool avx2, avx512bw, avx512vl, vpopcntdq, vnni, bf16;
  bool neon;
  bool amx;  // AMX-TILE + AMX-INT8, enabled by the OS and permitted to this process (amx_permitted)
};

#if defined(__x86_64__) || defined(_M_X64)
bool amx_permitted();
#endif

#if defined(__x86_64__) || defined(_M_X64)
Features detect() {
  __builtin_cpu_init();
  Features f;
  f.avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt");
  f.avx512bw = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
  f.avx512vl = __builtin_cpu_supports("avx512vl");
  f.vpopcntdq = __builtin_cpu_supports("avx512vpopcntdq");
  f.vnni = __builtin_cpu_supports("avx512vnni");
  f.bf16 = __builtin_cpu_supports("avx512bf16");
  f.neon = false;
  f.amx = f.avx512bw && f.vpopcntdq && amx_permitted();
  return f;
}
#else
Features detect() {
  Features f{};
#if defined(__aarch64__)
  f.neon = true;  // Advanced SIMD is mandatory on aarch64
#endif
  return f;
}
#endif

const Features kFeatures = detect();

int best_isa() {
  if (kFeatures.amx) return AVX512_AMX;
  if (kFeatures.avx512bw && kFeatures.vpopcntdq) return AVX512_VPOPCNT;
  if (kFeatures.avx512bw) return AVX512;
  if (kFeatures.avx2) return AVX2;
  if (kFeatures.neon) return NEON;
  return PORTABLE;
}

int g_isa = best_isa();

// ------------------------------------------------------------------------------------------------------------------
// Scratch buffers, one per thread, grown on demand and never shrunk (no per-call malloc/free of large blocks).

uint8_t* scratch(size_t bytes) {
  static thread_local std::vector<uint64_t> buffer;  // 8-byte aligned
  if (buffer.size() * 8 < bytes) buffer.resize(bytes / 8 + 512);
  return reinterpret_cast<uint8_t*>(buffer.data());
}

inline uint64_t load_u64(const uint8_t* p, int64_t avail) {
  uint64_t v = 0;
  std::memcpy(&v, p, avail >= 8 ? 8 : (size_t)avail);
  return v;
}

// ------------------------------------------------------------------------------------------------------------------
// Kernel layouts of the weight bits, made once per Linear from the checkpoint layout (repack_* below):
//
//   bits (w1a1): uint64 [ceil(N/8)][Kw][8], Kw = ceil(K/256)·4: word w of the 8 rows 8g … 8g+7 side by side, so one
//                512-bit load holds a 64-bit slice of 8 output rows and each 64-bit lane accumulates one output
//                (no horizontal reductions; the input word is broadcast).
//   nib  (w1a8): uint64 [ceil(N/16)][ceil(K/4)], bit 4r+t = B[16g+r][4s+t]: 4 reduction steps of 16 rows, which a
//                mask blend turns into the ±1 bytes of one vpdpbusd (16 int32 lanes = 16 output rows).
// Rows past N and bits past K are 0.

constexpr int64_t kBitsGroup = 8, kNibGroup = 16;

// Words per row in the bits layout: ceil(K / 64) rounded up to a multiple of 4 (the carry-save block; the padding
// words are 0 in weights and inputs, so they add nothing to XOR or AND counts).
inline int64_t bits_words(int64_t K) { return (K + 255) / 256 * 4; }

void repack_bits(const uint8_t* w, int64_t N, int64_t K, uint64_t* out) {
  const int64_t ld = (K + 7) / 8, kw = bits_words(K), groups = (N + kBitsGroup - 1) / kBitsGroup;
  std::memset(out, 0, (size_t)(groups * kw * kBitsGroup * 8));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t word = 0; word * 8 < ld; ++word)
      out[(n / kBitsGroup * kw + word) * kBitsGroup + n % kBitsGroup] = load_u64(w + n * ld + word * 8, ld - word * 8);
}

void repack_nib(const uint8_t* w, int64_t N, int64_t K, uint64_t* out) {
  const int64_t ld = (K + 7) / 8, steps = (K + 3) / 4, groups = (N + kNibGroup - 1) / kNibGroup;
  std::memset(out, 0, (size_t)(groups * steps * 8));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k)
      if ((w[n * ld + k / 8] >> (k % 8)) & 1)
        out[n / kNibGroup * steps + k / 4] |= 1ULL << ((n % kNibGroup) * 4 + k % 4);
}

// The AVX-512 lookup-table GEMM's weight index (lut_gemm.h, LutAvx512), made from a nib layout: for each block c of 32
// rows and step p of 12 inputs, 32 16-bit lanes; lane 2q + h is row 32c + 16h + q, its low byte the row's 6 weight
// bits of inputs 12p … 12p+5 (bit t = input 12p + t), its high byte those of 12p+6 … 12p+11. "nib" kernel weights
// carry it after their nib words, from a 64-byte boundary (repack "nib"), so the GEMM does not rebuild it per call.
// Scalar: made once per Linear.
int64_t nib_words(int64_t N, int64_t K) { return (N + kNibGroup - 1) / kNibGroup * ((K + 3) / 4); }
// where the index starts in "nib" kernel weights: after the nib words, rounded up to 64 bytes
int64_t lut6_offset_words(int64_t N, int64_t K) { return (nib_words(N, K) + 7) / 8 * 8; }
// index steps of a row of nib_steps nib steps: 3 nib steps (12 inputs) each
int64_t lut6_steps(int64_t nib_steps) { return (nib_steps + 2) / 3; }
int64_t lut6_index_words(int64_t N, int64_t K) { return (N + 31) / 32 * lut6_steps((K + 3) / 4) * 8; }
// the whole "nib" kernel layout: nib words, zeros up to 64 bytes, the lut6 index
int64_t nib_layout_words(int64_t N, int64_t K) { return lut6_offset_words(N, K) + lut6_index_words(N, K); }

void lut6_index(const uint64_t* nib, int64_t N, int64_t K, uint8_t* out) {
  const int64_t steps = (K + 3) / 4, groups = (N + kNibGroup - 1) / kNibGroup, P = lut6_steps(steps);
  for (int64_t c = 0; c < (N + 31) / 32; ++c)
    for (int64_t p = 0; p < P; ++p)
      for (int lane = 0; lane < 32; ++lane) {
        const int64_t g = 2 * c + lane % 2, q = lane / 2;
        uint32_t n[3];
        for (int t = 0; t < 3; ++t) {
          const int64_t st = 3 * p + t;
          n[t] = g < groups && st < steps ? (uint32_t)(nib[g * steps + st] >> (4 * q)) & 0xF : 0;
        }
        const uint16_t word = (uint16_t)(n[0] | (n[1] & 3) << 4 | ((n[1] >> 2) | n[2] << 2) << 8);
        std::memcpy(out + (c * P + p) * 64 + 2 * lane, &word, 2);
      }
}

// The "nib" kernel layout of packed bits w [N, ceil(K/8)] (nib_layout_words long), as repack "nib" makes it.
void repack_nib_layout(const uint8_t* w, int64_t N, int64_t K, uint64_t* out) {
  repack_nib(w, N, K, out);
  std::memset(out + nib_words(N, K), 0, (size_t)(lut6_offset_words(N, K) - nib_words(N, K)) * 8);
  lut6_index(out, N, K, reinterpret_cast<uint8_t*>(out + lut6_offset_words(N, K)));
}

// ------------------------------------------------------------------------------------------------------------------
// Micro-kernels. Each computes an MR × (NG·group) tile of raw integer results into out[MR][NG·group] (int32):
//   bits: popcount(a_m OP w_n) over Kw words (OP 0 = XOR, 1 = AND);  u8: Σ_k u[m,k]·B[n,k].
// `a` are MR row pointers, `w` the first of NG groups (`gstride` words apart), `steps` words (bits) or 4-byte
// steps (u8) per row.

template <int OP>
inline uint64_t combine(uint64_t x, uint64_t y) {
  return OP == 0 ? x ^ y : x & y;
}

struct BitsPortable {
  static constexpr int MR = 1, NG = 1;
  template <int R, int G, int OP>
  static void tile(const uint64_t* const* a, const uint64_t* w, int64_t gstride, int64_t kw, int32_t* out, int64_t ldo) {
    for (int i = 0; i < R; ++i)
      for (int j = 0; j < G; ++j)
        for (int r = 0; r < kBitsGroup; ++r) {
          int64_t c = 0;
          for (int64_t k = 0; k < kw; ++k) c += __builtin_popcountll(combine<OP>(a[i][k], w[j * gstride + k * kBitsGroup + r]));
          out[i * ldo + j * kBitsGroup + r] = (int32_t)c;
        }
  }
};

#if defined(__x86_64__) || defined(_M_X64)
struct BitsAvx2 {  // 4 rows per ymm, nibble-table popcount (vpshufb) into byte counters, vpsadbw every 31 words
  static constexpr int MR = 2, NG = 1;

  // The popcount of each byte of v (lut: nibble_lut(), low: 0x0f in every byte; passed in so that loops keep them in
  // registers); also the encoder runtime's attention counts (popcount_lanes_avx2).
  __attribute__((target("avx2"), always_inline)) static inline __m256i nibble_lut() {
    return _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3,
                            4);
  }
  __attribute__((target("avx2"), always_inline)) static inline __m256i popcnt_bytes(__m256i v, __m256i lut,
                                                                                     __m256i low) {
    const __m256i lo = _mm256_shuffle_epi8(lut, _mm256_and_si256(v, low));
    const __m256i hi = _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(v, 4), low));
    return _mm256_add_epi8(lo, hi);
  }

  template <int R, int G, int OP>
  __attribute__((target("avx2"))) static void tile(const uint64_t* const* a, const uint64_t* w, int64_t gstride,
                                                   int64_t kw, int32_t* out, int64_t ldo) {
    const __m256i lut = nibble_lut();
    const __m256i low = _mm256_set1_epi8(0x0f);
    __m256i acc[R][2 * G];
    for (int i = 0; i < R; ++i)
      for (int j = 0; j < 2 * G; ++j) acc[i][j] = _mm256_setzero_si256();
    for (int64_t k0 = 0; k0 < kw; k0 += 31) {
      const int64_t k1 = std::min(kw, k0 + 31);
      __m256i bytes[R][2 * G];
      for (int i = 0; i < R; ++i)
        for (int j = 0; j < 2 * G; ++j) bytes[i][j] = _mm256_setzero_si256();
      for (int64_t k = k0; k < k1; ++k) {
        __m256i vw[2 * G];
        for (int j = 0; j < 2 * G; ++j)
          vw[j] = _mm256_loadu_si256((const __m256i*)(w + (j / 2) * gstride + k * kBitsGroup + (j % 2) * 4));
        for (int i = 0; i < R; ++i) {
          const __m256i va = _mm256_set1_epi64x((long long)a[i][k]);
          for (int j = 0; j < 2 * G; ++j) {
            const __m256i v = OP == 0 ? _mm256_xor_si256(va, vw[j]) : _mm256_and_si256(va, vw[j]);
            bytes[i][j] = _mm256_add_epi8(bytes[i][j], popcnt_bytes(v, lut, low));
          }
        }
      }
      for (int i = 0; i < R; ++i)
        for (int j = 0; j < 2 * G; ++j)
          acc[i][j] = _mm256_add_epi64(acc[i][j], _mm256_sad_epu8(bytes[i][j], _mm256_setzero_si256()));
    }
    for (int i = 0; i < R; ++i)
      for (int j = 0; j < 2 * G; ++j) {
        alignas(32) int64_t lanes[4];
        _mm256_store_si256((__m256i*)lanes, acc[i][j]);
        for (int t = 0; t < 4; ++t) out[i * ldo + j * 4 + t] = (int32_t)lanes[t];
      }
  }
};

struct BitsAvx512 {
  // 8 rows per zmm. Without VPOPCNTDQ a popcount costs 6 ops (vpshufb nibble table), so the words are first summed
  // with carry-save adders (Harley & Seal; Muła, Kurz & Lemire, "Faster population counts using AVX2
  // instructions", 2018): per block of 4 words, two CSAs into `ones` and `twos` and one into `fours`, whose
  // popcount (weight 4) goes to byte counters, flushed with vpsadbw every 31 blocks; at the end
  // count = 4·Σ popcount(fours) + 2·popcount(twos) + popcount(ones). 17 ops per 4 words instead of 32.
  static constexpr int MR = 2, NG = 2;

  __attribute__((target("avx512f,avx512bw"), always_inline)) static inline __m512i popcnt_bytes(__m512i v, __m512i lut,
                                                                                              __m512i low) {
    const __m512i lo = _mm512_shuffle_epi8(lut, _mm512_and_si512(v, low));
    const __m512i hi = _mm512_shuffle_epi8(lut, _mm512_and_si512(_mm512_srli_epi16(v, 4), low));
    return _mm512_add_epi8(lo, hi);
  }

  template <int R, int G, int OP>
  __attribute__((target("avx512f,avx512bw"))) static void tile(const uint64_t* const* a, const uint64_t* w,
                                                                int64_t gstride, int64_t kw, int32_t* out, int64_t ldo) {
    const __m512i lut = _mm512_broadcast_i32x4(_mm_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4));
    const __m512i low = _mm512_set1_epi8(0x0f);
    __m512i ones[R][G], twos[R][G], total[R][G];
#pragma GCC unroll 4
    for (int i = 0; i < R; ++i)
#pragma GCC unroll 4
      for (int j = 0; j < G; ++j) ones[i][j] = twos[i][j] = total[i][j] = _mm512_setzero_si512();
    for (int64_t k0 = 0; k0 < kw; k0 += 4 * 31) {
      const int64_t k1 = std::min(kw, k0 + 4 * 31);
      __m512i fours_bytes[R][G];
#pragma GCC unroll 4
      for (int i = 0; i < R; ++i)
#pragma GCC unroll 4
        for (int j = 0; j < G; ++j) fours_bytes[i][j] = _mm512_setzero_si512();
      for (int64_t k = k0; k < k1; k += 4) {
#pragma GCC unroll 4
        for (int i = 0; i < R; ++i)
#pragma GCC unroll 4
          for (int j = 0; j < G; ++j) {
            const uint64_t* wj = w + j * gstride + k * kBitsGroup;
            __m512i v[4];
#pragma GCC unroll 4
            for (int t = 0; t < 4; ++t) {
              const __m512i va = _mm512_set1_epi64((long long)a[i][k + t]);
              const __m512i vw = _mm512_loadu_si512(wj + t * kBitsGroup);
              v[t] = OP == 0 ? _mm512_xor_si512(va, vw) : _mm512_and_si512(va, vw);
            }
            // CSA(h, l) of (x, y, z): l = x ^ y ^ z (ternlog 0x96), h = majority(x, y, z) (0xE8)
            const __m512i twos_a = _mm512_ternarylogic_epi64(ones[i][j], v[0], v[1], 0xE8);
            const __m512i ones_a = _mm512_ternarylogic_epi64(ones[i][j], v[0], v[1], 0x96);
            const __m512i twos_b = _mm512_ternarylogic_epi64(ones_a, v[2], v[3], 0xE8);
            ones[i][j] = _mm512_ternarylogic_epi64(ones_a, v[2], v[3], 0x96);
            const __m512i fours = _mm512_ternarylogic_epi64(twos[i][j], twos_a, twos_b, 0xE8);
            twos[i][j] = _mm512_ternarylogic_epi64(twos[i][j], twos_a, twos_b, 0x96);
            fours_bytes[i][j] = _mm512_add_epi8(fours_bytes[i][j], popcnt_bytes(fours, lut, low));
          }
      }
#pragma GCC unroll 4
      for (int i = 0; i < R; ++i)
#pragma GCC unroll 4
        for (int j = 0; j < G; ++j)
          total[i][j] = _mm512_add_epi64(total[i][j], _mm512_sad_epu8(fours_bytes[i][j], _mm512_setzero_si512()));
    }
    const __m512i zero = _mm512_setzero_si512();
    for (int i = 0; i < R; ++i)
      for (int j = 0; j < G; ++j) {
        __m512i c = _mm512_slli_epi64(total[i][j], 2);
        c = _mm512_add_epi64(c, _mm512_slli_epi64(_mm512_sad_epu8(popcnt_bytes(twos[i][j], lut, low), zero), 1));
        c = _mm512_add_epi64(c, _mm512_sad_epu8(popcnt_bytes(ones[i][j], lut, low), zero));
        _mm256_storeu_si256((__m256i*)(out + i * ldo + j * kBitsGroup), _mm512_cvtepi64_epi32(c));
      }
  }
};

struct PopcntNative {
  __attribute__((target("avx512f,avx512bw,avx512vpopcntdq"), always_inline)) static inline __m512i count(__m512i v) {
    return _mm512_popcnt_epi64(v);
  }
};

struct PopcntEmulated {  // the same 64-bit lane counts without VPOPCNTDQ (nibble table + vpsadbw), for testing
  __attribute__((target("avx512f,avx512bw"), always_inline)) static inline __m512i count(__m512i v) {
    return _mm512_sad_epu8(BitsAvx512::popcnt_bytes(v, _mm512_broadcast_i32x4(_mm_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1,
                                                                                              2, 2, 3, 2, 3, 3, 4)),
                                                      _mm512_set1_epi8(0x0f)),
                           _mm512_setzero_si512());
  }
};

// The tile is compiled for VPOPCNTDQ in both instantiations; with PopcntEmulated it issues no VPOPCNTDQ instruction.
template <class Popcnt>
struct BitsVpopcnt {  // 8 rows per zmm, vpopcntq straight into 64-bit lane counters
  static constexpr int MR = 4, NG = 4;
  template <int R, int G, int OP>
  __attribute__((target("avx512f,avx512bw,avx512vpopcntdq"))) static void tile(const uint64_t* const* a,
                                                                                 const uint64_t* w, int64_t gstride,
                                                                                 int64_t kw, int32_t* out, int64_t ldo) {
    __m512i acc[R][G];
#pragma GCC unroll 4
    for (int i = 0; i < R; ++i)
#pragma GCC unroll 4
      for (int j = 0; j < G; ++j) acc[i][j] = _mm512_setzero_si512();
    for (int64_t k = 0; k < kw; ++k) {
      __m512i vw[G];
#pragma GCC unroll 4
      for (int j = 0; j < G; ++j) vw[j] = _mm512_loadu_si512(w + j * gstride + k * kBitsGroup);
#pragma GCC unroll 4
      for (int i = 0; i < R; ++i) {
        const __m512i va = _mm512_set1_epi64((long long)a[i][k]);
#pragma GCC unroll 4
        for (int j = 0; j < G; ++j) {
          __m512i v = OP == 0 ? _mm512_xor_si512(va, vw[j]) : _mm512_and_si512(va, vw[j]);
          acc[i][j] = _mm512_add_epi64(acc[i][j], Popcnt::count(v));
        }
      }
    }
#pragma GCC unroll 4
    for (int i = 0; i < R; ++i)
#pragma GCC unroll 4
      for (int j = 0; j < G; ++j)  // unrolled like the loops above, so that acc stays in registers
        _mm256_storeu_si256((__m256i*)(out + i * ldo + j * kBitsGroup), _mm512_cvtepi64_epi32(acc[i][j]));
  }
};
#endif

#if defined(__aarch64__)
// NEON: 2 rows per 128-bit register (the 8 rows of a group in 4 registers), the input word broadcast; vcntq_u8
// counts the bits of each byte and vpadalq_u8 adds byte pairs into u16 lanes (≤ 16 per word: flushed to 32-bit
// counters every 4095 words), each 64-bit lane summed at the end (one lane = one output row).
struct BitsNeon {
  static constexpr int MR = 4, NG = 1;
  template <int R, int G, int OP>
  static void tile(const uint64_t* const* a, const uint64_t* w, int64_t gstride, int64_t kw, int32_t* out, int64_t ldo) {
    uint32x4_t total[R][4 * G];
    for (int i = 0; i < R; ++i)
      for (int j = 0; j < 4 * G; ++j) total[i][j] = vdupq_n_u32(0);
    for (int64_t k0 = 0; k0 < kw; k0 += 4095) {
      const int64_t k1 = std::min(kw, k0 + 4095);
      uint16x8_t acc[R][4 * G];
      for (int i = 0; i < R; ++i)
        for (int j = 0; j < 4 * G; ++j) acc[i][j] = vdupq_n_u16(0);
      for (int64_t k = k0; k < k1; ++k) {
        uint8x16_t vw[4 * G];
        for (int j = 0; j < 4 * G; ++j)
          vw[j] = vreinterpretq_u8_u64(vld1q_u64(w + (j / 4) * gstride + k * kBitsGroup + (j % 4) * 2));
        for (int i = 0; i < R; ++i) {
          const uint8x16_t va = vreinterpretq_u8_u64(vdupq_n_u64(a[i][k]));
          for (int j = 0; j < 4 * G; ++j)
            acc[i][j] = vpadalq_u8(acc[i][j], vcntq_u8(OP == 0 ? veorq_u8(va, vw[j]) : vandq_u8(va, vw[j])));
        }
      }
      for (int i = 0; i < R; ++i)
        for (int j = 0; j < 4 * G; ++j) total[i][j] = vpadalq_u16(total[i][j], acc[i][j]);
    }
    for (int i = 0; i < R; ++i)
      for (int j = 0; j < 4 * G; ++j) {
        const uint64x2_t c = vpaddlq_u32(total[i][j]);
        int32_t* o = out + i * ldo + (j / 4) * kBitsGroup + (j % 4) * 2;
        o[0] = (int32_t)vgetq_lane_u64(c, 0);
        o[1] = (int32_t)vgetq_lane_u64(c, 1);
      }
  }
};
#endif

// BYTES = false: ±1 weights from the nib layout (one word per step); BYTES = true: int8 weights, the i8 layout
// ([ceil(N/16)][ceil(K/4)][16 rows × 4 bytes], 8 words per step), for the int8 masked-LM head.
template <bool BYTES>
struct NibPortable {
  static constexpr int MR = 1, NG = 1;
  template <int R, int G>
  static void tile(const uint8_t* const* u, const uint64_t* w, int64_t gstride, int64_t steps, int32_t* out, int64_t ldo) {
    for (int i = 0; i < R; ++i)
      for (int j = 0; j < G; ++j)
        for (int r = 0; r < kNibGroup; ++r) {
          int64_t d = 0;
          for (int64_t s = 0; s < steps; ++s) {
            if (BYTES) {
              const int8_t* wb = reinterpret_cast<const int8_t*>(w + j * gstride + s * 8) + 4 * r;
              for (int t = 0; t < 4; ++t) d += (int64_t)u[i][4 * s + t] * wb[t];
              continue;
            }
            const uint64_t bits = w[j * gstride + s] >> (4 * r);
            for (int t = 0; t < 4; ++t) d += (int64_t)u[i][4 * s + t] * ((bits >> t) & 1 ? 1 : -1);
          }
          out[i * ldo + j * kNibGroup + r] = (int32_t)d;
        }
  }
};

#if defined(__x86_64__) || defined(_M_X64)
template <bool BYTES>
struct NibAvx2 {  // 8 rows × 4 steps per ymm: ±1 bytes from 32 bits by byte shuffle + bit test (or int8 loads)
  static constexpr int MR = 2, NG = 1;
  template <int R, int G>
  __attribute__((target("avx2"))) static void tile(const uint8_t* const* u, const uint64_t* w, int64_t gstride,
                                                   int64_t steps, int32_t* out, int64_t ldo) {
    const __m256i select = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3,
                                            3, 3, 3, 3, 3, 3, 3);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    const __m256i two = _mm256_set1_epi8(2), one = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
    __m256i acc[R][2 * G];
    for (int i = 0; i < R; ++i)
      for (int j = 0; j < 2 * G; ++j) acc[i][j] = _mm256_setzero_si256();
    for (int64_t s = 0; s < steps; ++s) {
      __m256i vw[2 * G];
      for (int j = 0; j < 2 * G; ++j) {
        if (BYTES) {
          vw[j] = _mm256_loadu_si256((const __m256i*)(w + (j / 2) * gstride + s * 8 + (j % 2) * 4));
          continue;
        }
        const uint32_t half = (uint32_t)(w[(j / 2) * gstride + s] >> (32 * (j % 2)));
        __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)half), select);
        __m256i on = _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);  // 0xFF where +1
        vw[j] = _mm256_sub_epi8(_mm256_and_si256(on, two), one);       // +1 / −1
      }
      for (int i = 0; i < R; ++i) {
        int32_t quad;
        std::memcpy(&quad, u[i] + 4 * s, 4);
        const __m256i vu = _mm256_set1_epi32(quad);
        // u8 × s8 pairs → s16 (vpmaddubsw saturates at ±32767: fine for ±1 weights, |·| ≤ 510; int8 weights need
        // u ≤ 127, i.e. 7-bit activations, 2·127·127 < 32767, which the int8 head uses on every path) → s32
        for (int j = 0; j < 2 * G; ++j)
          acc[i][j] = _mm256_add_epi32(acc[i][j], _mm256_madd_epi16(_mm256_maddubs_epi16(vu, vw[j]), ones16));
      }
    }
    for (int i = 0; i < R; ++i)
      for (int j = 0; j < 2 * G; ++j) _mm256_storeu_si256((__m256i*)(out + i * ldo + j * 8), acc[i][j]);
  }
};

// 16 rows per zmm: the ±1 bytes of 4 steps × 16 rows are blended from one 64-bit word of the nib layout; the 4 input
// bytes are broadcast. VNNI: vpdpbusd (u8 × s8, four products summed into each int32 lane). Without VNNI:
// vpmaddubsw + vpmaddwd (the function is compiled with the VNNI target either way but only issues VNNI
// instructions when VNNI is true).
template <bool VNNI, bool BYTES>
struct NibAvx512 {
  static constexpr int MR = 4, NG = 4;
  template <int R, int G>
  __attribute__((target("avx512f,avx512bw,avx512vnni"))) static void tile(const uint8_t* const* u, const uint64_t* w,
                                                                           int64_t gstride, int64_t steps,
                                                                           int32_t* out, int64_t ldo) {
    const __m512i plus = _mm512_set1_epi8(1), minus = _mm512_set1_epi8(-1), ones16 = _mm512_set1_epi16(1);
    __m512i acc[R][G];
#pragma GCC unroll 4
    for (int i = 0; i < R; ++i)
#pragma GCC unroll 4
      for (int j = 0; j < G; ++j) acc[i][j] = _mm512_setzero_si512();
    for (int64_t s = 0; s < steps; ++s) {
      __m512i vw[G];
#pragma GCC unroll 4
      for (int j = 0; j < G; ++j)
        vw[j] = BYTES ? _mm512_loadu_si512(w + j * gstride + s * 8)
                      : _mm512_mask_blend_epi8((__mmask64)w[j * gstride + s], minus, plus);
#pragma GCC unroll 4
      for (int i = 0; i < R; ++i) {
        int32_t quad;
        std::memcpy(&quad, u[i] + 4 * s, 4);
        const __m512i vu = _mm512_set1_epi32(quad);
#pragma GCC unroll 4
        for (int j = 0; j < G; ++j) {
          if constexpr (VNNI)
            acc[i][j] = _mm512_dpbusd_epi32(acc[i][j], vu, vw[j]);
          else
            acc[i][j] = _mm512_add_epi32(acc[i][j], _mm512_madd_epi16(_mm512_maddubs_epi16(vu, vw[j]), ones16));
        }
      }
    }
#pragma GCC unroll 4
    for (int i = 0; i < R; ++i)
#pragma GCC unroll 4
      for (int j = 0; j < G; ++j) _mm512_storeu_si512(out + i * ldo + j * kNibGroup, acc[i][j]);
  }
};
#endif

#if defined(__aarch64__)
// NEON, ±1 weights (the nib layout): Σ_k u_k·b_k = 2·Σ_{b_k = +1} u_k − Σ_k u_k. Per step, one word of a group
// (16 rows × 4 steps) is spread to 64 byte masks (vqtbl1q_u8 + vtstq_u8: byte 4r + t = 0xFF iff B[r][4s + t] = +1),
// ANDed with the row's 4 input bytes (broadcast) and added pairwise into u16 lanes (vpadalq_u8, ≤ 510 per step:
// flushed every 128 steps into 32-bit lanes by vpadalq_u16, which then hold row 4q + lane of register q).
struct NibNeon {
  static constexpr int MR = 2, NG = 1;
  template <int R, int G>
  static void tile(const uint8_t* const* u, const uint64_t* w, int64_t gstride, int64_t steps, int32_t* out, int64_t ldo) {
    static const uint8_t kBitSel[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
    static const uint8_t kSpread[4][16] = {{0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1},
                                           {2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3},
                                           {4, 4, 4, 4, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 5, 5},
                                           {6, 6, 6, 6, 6, 6, 6, 6, 7, 7, 7, 7, 7, 7, 7, 7}};
    const uint8x16_t bitsel = vld1q_u8(kBitSel);
    uint8x16_t spread[4];
    for (int q = 0; q < 4; ++q) spread[q] = vld1q_u8(kSpread[q]);
    uint32x4_t total[R][4 * G], usum[R];
    for (int i = 0; i < R; ++i) {
      usum[i] = vdupq_n_u32(0);
      for (int j = 0; j < 4 * G; ++j) total[i][j] = vdupq_n_u32(0);
    }
    for (int64_t s0 = 0; s0 < steps; s0 += 128) {
      const int64_t s1 = std::min(steps, s0 + 128);
      uint16x8_t acc[R][4 * G], uacc[R];
      for (int i = 0; i < R; ++i) {
        uacc[i] = vdupq_n_u16(0);
        for (int j = 0; j < 4 * G; ++j) acc[i][j] = vdupq_n_u16(0);
      }
      for (int64_t s = s0; s < s1; ++s) {
        uint8x16_t mask[4 * G];
        for (int g = 0; g < G; ++g) {
          const uint8x16_t word = vreinterpretq_u8_u64(vdupq_n_u64(w[g * gstride + s]));
          for (int q = 0; q < 4; ++q) mask[4 * g + q] = vtstq_u8(vqtbl1q_u8(word, spread[q]), bitsel);
        }
        for (int i = 0; i < R; ++i) {
          uint32_t quad;
          std::memcpy(&quad, u[i] + 4 * s, 4);
          const uint8x16_t vu = vreinterpretq_u8_u32(vdupq_n_u32(quad));
          uacc[i] = vpadalq_u8(uacc[i], vu);  // 4 × Σ u
          for (int j = 0; j < 4 * G; ++j) acc[i][j] = vpadalq_u8(acc[i][j], vandq_u8(vu, mask[j]));
        }
      }
      for (int i = 0; i < R; ++i) {
        usum[i] = vpadalq_u16(usum[i], uacc[i]);
        for (int j = 0; j < 4 * G; ++j) total[i][j] = vpadalq_u16(total[i][j], acc[i][j]);
      }
    }
    for (int i = 0; i < R; ++i) {
      const int32_t all = (int32_t)(vaddvq_u32(usum[i]) / 4);
      for (int j = 0; j < 4 * G; ++j) {
        const int32x4_t d = vsubq_s32(vshlq_n_s32(vreinterpretq_s32_u32(total[i][j]), 1), vdupq_n_s32(all));
        vst1q_s32(out + i * ldo + (j / 4) * kNibGroup + (j % 4) * 4, d);
      }
    }
  }
};
#endif

// ------------------------------------------------------------------------------------------------------------------
// Tiled, threaded driver with the fused epilogue:
//   dot[m,n] = mul·raw[m,n] + add_m[m] + add_n[n]     (bits: K − 2c or 2c − pop_m;  u8: d − z·Σ_k B[n,k])
//   y[m,n]   = s_m · (α_n · dot + γ_n · xsum_m) + bias_n

// Items 0 … n − 1 shared by the threads of the enclosing parallel region as a static schedule that steals: thread t
// owns the contiguous range [t·n/T, (t + 1)·n/T) and claims its items front to back; when its range is done it claims
// what is left of the others' ranges (the same cursors, so every item runs exactly once). The two cores of this
// project's virtual machines are not always equally fast (a slow phase): a static schedule then waits for the slower
// core, a dynamic one loses the ranges' locality and pays a shared counter per item (paired A/B, BiT W1A1 BERT-base,
// AMD EPYC Zen 3: dynamic, 1 took 0.86–0.93× the time in slow phases but 1.02–1.07× in fast ones; these ranges
// 0.72–0.96× in slow phases and 0.99–1.02× in fast ones). Used by the GEMM drivers (drive, the AVX2 table GEMM, the
// W1A8 lookup-table GEMM).
// Construct before the parallel region with its thread count; inside it every thread claims items until none is left:
//   int k = 0;  for (int64_t item; (item = ranges.claim(k)) >= 0;) { … }
class StealingRanges {
 public:
  StealingRanges(int64_t n, int nthreads) : n_(n), threads_(std::max(1, nthreads)), cursors_(threads_) {
    for (int t = 0; t < threads_; ++t) cursors_[t].next.store(begin(t), std::memory_order_relaxed);
  }
  // The calling thread's next item, or −1 when every range is done; `k` (0 at the start, the thread's own) is the
  // range it is at, counted from its own. Every thread visits every range, so a team of any size — one thread in a
  // serial region — runs all items.
  int64_t claim(int& k) {
    const int t = omp_get_thread_num() % threads_;
    for (; k < threads_; ++k) {
      const int v = (t + k) % threads_;
      const int64_t i = cursors_[v].next.fetch_add(1, std::memory_order_relaxed);
      if (i < begin(v + 1)) return i;
    }
    return -1;
  }

 private:
  struct alignas(64) Cursor {
    std::atomic<int64_t> next{0};
  };
  int64_t begin(int t) const { return n_ * t / threads_; }
  int64_t n_;
  int threads_;
  std::vector<Cursor> cursors_;
};

enum BitMode { SIGNED = 0, UNSIGNED_GE = 1, UNSIGNED_GT = 2, SIGNED_GELU = 3, SIGNED_SCALED = 4 };

struct Epilogue {
  int64_t mul;
  const int64_t* add_m;   // [M] or null
  const int32_t* add_n;   // [N] or null
  const float* alpha;     // [N]
  const float* gamma;     // [N] or null
  const float* bias;      // [N] or null
  const float* in_scale;  // [M] (s_m) or null (= scale)
  float scale;
  const int64_t* xsum;    // [M] Σ_k q[m,k] (for γ)
  float* out;             // [M, ldo]
  int64_t ldo;
  // Optional (pack_bits non-null): the output goes to the next binarized Linear's input quantizer instead of `out`:
  // its bits [M, pack_ld bytes] (zeroed by the caller) and their counts per row and 64-column stretch (pack_pop
  // [M, ceil(N/64)], zeroed by the caller; a chunk of columns starting at n0 writes entry n0/64), as pack_rows would
  // make them from the float output (the same y, the same comparisons).
  uint8_t* pack_bits;
  int64_t pack_ld;
  int64_t* pack_pop;
  const float* pack_shift;  // [N] (SIGNED_GELU: [2, N], the upper thresholds at pack_shift + pack_n) or null
  float pack_s, pack_thr;
  int pack_mode;
  int64_t pack_n;  // the full row length N
};

int64_t pack_row_isa(int isa, const float* row, int64_t K, const float* shift, float s, float thr, int mode,
                     uint8_t* out, int64_t hi);


#if defined(__x86_64__) || defined(_M_X64)
// Eight floats v = row[k..k+7] → their eight bits (bit_of's comparisons, LSB = column k), vectorized: pack_row_avx2's
// loop body, shared with the fused tile epilogue (finish_rows_avx2).
__attribute__((target("avx2"), always_inline)) inline int pack8_avx2(__m256 v, const float* shift, int64_t k,
                                                                     __m256 vs, __m256 vthr, int mode, int64_t hi) {
  if (mode == SIGNED_GELU)
    return _mm256_movemask_ps(_mm256_or_ps(_mm256_cmp_ps(v, _mm256_loadu_ps(shift + k), _CMP_LE_OQ),
                                           _mm256_cmp_ps(v, _mm256_loadu_ps(shift + hi + k), _CMP_GE_OQ)));
  if (shift) v = _mm256_sub_ps(v, _mm256_loadu_ps(shift + k));
  const __m256 zero = _mm256_setzero_ps();
  return _mm256_movemask_ps(mode == UNSIGNED_GT     ? _mm256_cmp_ps(_mm256_div_ps(v, vs), vthr, _CMP_GT_OQ)
                            : mode == SIGNED_SCALED ? _mm256_cmp_ps(_mm256_div_ps(v, vs), zero, _CMP_GE_OQ)
                                                    : _mm256_cmp_ps(v, vthr, _CMP_GE_OQ));
}
#endif

#if defined(__x86_64__) || defined(_M_X64)
// Sixteen floats v = row[k..k+15] → their sixteen bits (bit_of's comparisons, LSB = column k): pack_row_avx512's loop
// body, shared with the fused tile epilogue (finish_rows_avx512).
__attribute__((target("avx512f,avx512bw"), always_inline)) inline __mmask16 pack16_avx512(__m512 v, const float* shift,
                                                                                       int64_t k, __m512 vs,
                                                                                       __m512 vthr, int mode,
                                                                                       int64_t hi) {
  if (mode == SIGNED_GELU)
    return _mm512_cmp_ps_mask(v, _mm512_loadu_ps(shift + k), _CMP_LE_OQ) |
           _mm512_cmp_ps_mask(v, _mm512_loadu_ps(shift + hi + k), _CMP_GE_OQ);
  if (shift) v = _mm512_sub_ps(v, _mm512_loadu_ps(shift + k));
  return mode == UNSIGNED_GT     ? _mm512_cmp_ps_mask(_mm512_div_ps(v, vs), vthr, _CMP_GT_OQ)
         : mode == SIGNED_SCALED ? _mm512_cmp_ps_mask(_mm512_div_ps(v, vs), _mm512_setzero_ps(), _CMP_GE_OQ)
                                 : _mm512_cmp_ps_mask(v, vthr, _CMP_GE_OQ);
}
#endif

// Branch-free over n (absent γ / bias / add_n read as zeros from `zeros`), so it vectorizes; compiled twice.
__attribute__((always_inline)) inline void finish_loop(const Epilogue& e, int64_t m, int64_t n0, int64_t count,
                                                       const int32_t* raw, const float* zeros, const int32_t* izeros,
                                                       float* y) {
  const float s = e.in_scale ? e.in_scale[m] : e.scale;
  const float gx = e.gamma ? (float)e.xsum[m] : 0.0f;
  const int32_t am = e.add_m ? (int32_t)e.add_m[m] : 0, mul = (int32_t)e.mul;
  const float* alpha = e.alpha + n0;
  const float* gamma = e.gamma ? e.gamma + n0 : zeros;
  const float* bias = e.bias ? e.bias + n0 : zeros;
  const int32_t* add_n = e.add_n ? e.add_n + n0 : izeros;
  if (!e.add_n) {  // the W1A1 Linears: the same values without reading the zero stand-in of add_n
    for (int64_t j = 0; j < count; ++j)
      y[j] = s * (alpha[j] * (float)(mul * raw[j] + am) + gamma[j] * gx) + bias[j];
    return;
  }
  for (int64_t j = 0; j < count; ++j)
    y[j] = s * (alpha[j] * (float)(mul * raw[j] + am + add_n[j]) + gamma[j] * gx) + bias[j];
}

#if defined(__x86_64__) || defined(_M_X64)
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq"))) void finish_row_avx512(
    const Epilogue& e, int64_t m, int64_t n0, int64_t count, const int32_t* raw, const float* zeros,
    const int32_t* izeros, float* y) {
  finish_loop(e, m, n0, count, raw, zeros, izeros, y);
}

__attribute__((target("avx2"))) void finish_row_avx2(const Epilogue& e, int64_t m, int64_t n0, int64_t count,
                                                     const int32_t* raw, const float* zeros, const int32_t* izeros,
                                                     float* y) {
  finish_loop(e, m, n0, count, raw, zeros, izeros, y);
}
#endif

void finish_row_default(const Epilogue& e, int64_t m, int64_t n0, int64_t count, const int32_t* raw,
                        const float* zeros, const int32_t* izeros, float* y) {
  finish_loop(e, m, n0, count, raw, zeros, izeros, y);
}

// scratch: room for `count` floats, where a packing epilogue puts the row before packing it (null: a per-thread
// buffer; the GEMM drivers pass one on their stack, which saves a thread-local lookup per row and chunk).
inline void finish_row(const Epilogue& e, int64_t m, int64_t n0, int64_t count, const int32_t* raw,
                       float* scratch = nullptr) {
  // the stand-ins for an absent γ, bias or add_n: finish_loop reads them like the real vectors, so a row is finished
  // in runs of at most kZeroRun columns (the lookup-table paths pass whole rows of N columns)
  constexpr int64_t kZeroRun = 1024;
  alignas(64) static const float zeros[kZeroRun] = {};
  alignas(64) static const int32_t izeros[kZeroRun] = {};
  float* y = e.out + m * e.ldo + n0;
  if (e.pack_bits) {  // y into a small row, then packed (n0 is a multiple of 8: whole bytes per chunk)
    if (scratch) {
      y = scratch;
    } else {
      static thread_local std::vector<float> row_buffer;
      if (row_buffer.size() < (size_t)count) row_buffer.resize((size_t)count);
      y = row_buffer.data();
    }
  }
#if defined(__x86_64__) || defined(_M_X64)
  const bool avx512 = kFeatures.avx512bw && g_isa >= AVX512, avx2 = kFeatures.avx2 && g_isa >= AVX2;
#endif
  for (int64_t c = 0; c < count; c += kZeroRun) {
    const int64_t run = std::min(kZeroRun, count - c);
#if defined(__x86_64__) || defined(_M_X64)
    if (avx512)
      finish_row_avx512(e, m, n0 + c, run, raw + c, zeros, izeros, y + c);
    else if (avx2)
      finish_row_avx2(e, m, n0 + c, run, raw + c, zeros, izeros, y + c);
    else
#endif
      finish_row_default(e, m, n0 + c, run, raw + c, zeros, izeros, y + c);
  }
  if (e.pack_bits) {
    const int64_t ones = pack_row_isa(g_isa, y, count, e.pack_shift ? e.pack_shift + n0 : nullptr, e.pack_s,
                                      e.pack_thr, e.pack_mode, e.pack_bits + m * e.pack_ld + n0 / 8, e.pack_n);
    e.pack_pop[m * ((e.pack_n + 63) / 64) + n0 / 64] = ones;  // one entry per chunk (NC ≥ 64): no sharing
  }
}

#if defined(__x86_64__) || defined(_M_X64)
// finish_loop's y for columns j .. j + 7 of one row (r: its raw sums; alpha, gamma, bias: the row's vectors from
// column n0, gamma / bias null when absent). vmul: the W1A1 epilogue's mul (±2) in every lane: mul·raw as
// sign(raw + raw, mul), the same integer without vpmulld (a slow multiply on AMD Zen 1).
__attribute__((target("avx2"), always_inline)) inline __m256 finish8_avx2(int64_t j, const int32_t* r,
                                                                         const float* alpha, const float* gamma,
                                                                         const float* bias, __m256i vmul, __m256i am,
                                                                         __m256 s, __m256 gx) {
  const __m256 zero = _mm256_setzero_ps();
  const __m256i raw = _mm256_loadu_si256((const __m256i*)(r + j));
  const __m256 dot =
      _mm256_cvtepi32_ps(_mm256_add_epi32(_mm256_sign_epi32(_mm256_add_epi32(raw, raw), vmul), am));
  const __m256 g = gamma ? _mm256_loadu_ps(gamma + j) : zero, b = bias ? _mm256_loadu_ps(bias + j) : zero;
  return _mm256_add_ps(
      _mm256_mul_ps(s, _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(alpha + j), dot), _mm256_mul_ps(g, gx))), b);
}

// The Epilogue fields the fused tile epilogues (finish_rows_avx2 / _avx512) read, as locals: the byte stores of the
// bits could alias an Epilogue's fields, and the compiler would reload each one per vector of columns. Vectors start
// at column n0.
struct TileEpilogue {
  const float *alpha, *gamma, *bias, *in_scale, *shift;  // gamma, bias, in_scale, shift: null when absent
  float scale;
  const int64_t *xsum, *add_m;
  int64_t hi, pop_ld, pack_ld, ldo, n0;
  uint8_t* pack_bits;
  int64_t* pack_pop;
  float* out;
  TileEpilogue(const Epilogue& e, int64_t n0)
      : alpha(e.alpha + n0), gamma(e.gamma ? e.gamma + n0 : nullptr), bias(e.bias ? e.bias + n0 : nullptr),
        in_scale(e.in_scale), shift(e.pack_shift ? e.pack_shift + n0 : nullptr), scale(e.scale), xsum(e.xsum),
        add_m(e.add_m), hi(e.pack_n), pop_ld((e.pack_n + 63) / 64), pack_ld(e.pack_ld), ldo(e.ldo), n0(n0),
        pack_bits(e.pack_bits), pack_pop(e.pack_pop), out(e.out) {}
  float row_scale(int64_t m) const { return in_scale ? in_scale[m] : scale; }
  float row_sum(int64_t m) const { return gamma ? (float)xsum[m] : 0.0f; }  // Σ_k q (the γ term's factor)
  int32_t row_add(int64_t m) const { return add_m ? (int32_t)add_m[m] : 0; }
  float* out_row(int64_t m) const { return out + m * ldo + n0; }
  uint8_t* bits_row(int64_t m) const { return pack_bits + m * pack_ld + n0 / 8; }
  // 64 columns' bits from column j0 (n of them, a multiple of 8): stored, and counted into `ones`
  static void store_word(uint8_t* bits, int64_t j0, uint64_t word, int64_t n, int64_t& ones) {
    std::memcpy(bits + j0 / 8, &word, (size_t)(n / 8));  // little-endian: byte b = columns 8b .. 8b + 7
    ones += __builtin_popcountll(word);
  }
  void store_count(int64_t m, int64_t ones) const { pack_pop[m * pop_ld + n0 / 64] = ones; }
};

// finish_row for `rows` consecutive rows of a tile (raw: [rows, ldr]) in one call on the AVX2 path: finish_loop's
// arithmetic in the same order (an absent γ or bias as a +0 term, as finish_loop reads it from `zeros`) and
// pack_row_avx2's comparisons, 8 columns at a time with the float row kept in registers — bit-identical to
// finish_row, without its five calls per row and chunk (at the table GEMM's 64-column chunks those calls took about
// as long as the arithmetic). Only for count % 8 == 0, no add_n and mul = ±2 (the W1A1 Linears); finish_rows checks.
// MODE: the packing epilogue's BitMode (a compile-time constant, so that pack8_avx2's branches fold), or -1: no
// packing (y stored to e.out). The Epilogue's fields are read into a TileEpilogue first.
template <int MODE>
__attribute__((target("avx2"))) void finish_rows_avx2(const Epilogue& e, int64_t m0, int rows, int64_t n0,
                                                      int64_t count, const int32_t* raw, int64_t ldr) {
  const TileEpilogue t(e, n0);
  const __m256i vmul = _mm256_set1_epi32((int32_t)e.mul);
  const __m256 vthr = _mm256_set1_ps(MODE == SIGNED ? 0.0f : e.pack_thr), vps = _mm256_set1_ps(e.pack_s);
  for (int i = 0; i < rows; ++i) {
    const int64_t m = m0 + i;
    const __m256 s = _mm256_set1_ps(t.row_scale(m)), gx = _mm256_set1_ps(t.row_sum(m));
    const __m256i am = _mm256_set1_epi32(t.row_add(m));
    const int32_t* r = raw + i * ldr;
    if constexpr (MODE < 0) {
      float* y = t.out_row(m);
      for (int64_t j = 0; j < count; j += 8)
        _mm256_storeu_ps(y + j, finish8_avx2(j, r, t.alpha, t.gamma, t.bias, vmul, am, s, gx));
    } else {
      int64_t ones = 0;
      for (int64_t j0 = 0; j0 < count; j0 += 64) {  // 64 columns → one word of bits, stored and counted once
        const int64_t n = std::min<int64_t>(64, count - j0);
        uint64_t word = 0;
        for (int64_t j = 0; j < n; j += 8) {
          const __m256 y = finish8_avx2(j0 + j, r, t.alpha, t.gamma, t.bias, vmul, am, s, gx);
          word |= (uint64_t)(uint32_t)pack8_avx2(y, t.shift, j0 + j, vps, vthr, MODE, t.hi) << j;
        }
        TileEpilogue::store_word(t.bits_row(m), j0, word, n, ones);
      }
      t.store_count(m, ones);
    }
  }
}

// finish_loop's y for columns j .. j + 15 of one row (finish8_avx2's arithmetic on 16 lanes); vneg: −1 in every lane
// for mul = −2, else 0: mul·raw = (2·raw XOR vneg) − vneg.
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq"), always_inline)) inline __m512 finish16_avx512(
    int64_t j, const int32_t* r, const float* alpha, const float* gamma, const float* bias, __m512i vneg, __m512i am,
    __m512 s, __m512 gx) {
  const __m512 zero = _mm512_setzero_ps();
  const __m512i twice = _mm512_slli_epi32(_mm512_loadu_si512((const void*)(r + j)), 1);
  const __m512 dot = _mm512_cvtepi32_ps(_mm512_add_epi32(_mm512_sub_epi32(_mm512_xor_si512(twice, vneg), vneg), am));
  const __m512 g = gamma ? _mm512_loadu_ps(gamma + j) : zero, b = bias ? _mm512_loadu_ps(bias + j) : zero;
  return _mm512_add_ps(
      _mm512_mul_ps(s, _mm512_add_ps(_mm512_mul_ps(_mm512_loadu_ps(alpha + j), dot), _mm512_mul_ps(g, gx))), b);
}

// finish_rows_avx2 on the AVX-512 paths, 16 columns at a time: finish_loop's arithmetic in the same order (mul·raw as
// (2·raw XOR sign) − sign, the same integer) and pack_row_avx512's comparisons, the bits straight from the compare
// masks — bit-identical to finish_row, without the float row's store and reload and the calls per row and chunk (in
// a perf profile of the BiT W1A1 encoder at batch 8 the two took 17 % of the CPU time). Only for count % 16 == 0, no
// add_n and mul = ±2; finish_rows checks.
template <int MODE>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq"))) void finish_rows_avx512(const Epilogue& e, int64_t m0,
                                                                                       int rows, int64_t n0,
                                                                                       int64_t count,
                                                                                       const int32_t* raw,
                                                                                       int64_t ldr) {
  const TileEpilogue t(e, n0);
  const __m512i vneg = _mm512_set1_epi32(e.mul < 0 ? -1 : 0);
  const __m512 vthr = _mm512_set1_ps(MODE == SIGNED ? 0.0f : e.pack_thr), vps = _mm512_set1_ps(e.pack_s);
  for (int i = 0; i < rows; ++i) {
    const int64_t m = m0 + i;
    const __m512 s = _mm512_set1_ps(t.row_scale(m)), gx = _mm512_set1_ps(t.row_sum(m));
    const __m512i am = _mm512_set1_epi32(t.row_add(m));
    const int32_t* r = raw + i * ldr;
    if constexpr (MODE < 0) {
      float* y = t.out_row(m);
      for (int64_t j = 0; j < count; j += 16)
        _mm512_storeu_ps(y + j, finish16_avx512(j, r, t.alpha, t.gamma, t.bias, vneg, am, s, gx));
    } else {
      int64_t ones = 0;
      for (int64_t j0 = 0; j0 < count; j0 += 64) {  // 64 columns → one word of bits, stored and counted once
        const int64_t n = std::min<int64_t>(64, count - j0);
        uint64_t word = 0;
        for (int64_t j = 0; j < n; j += 16) {
          const __m512 y = finish16_avx512(j0 + j, r, t.alpha, t.gamma, t.bias, vneg, am, s, gx);
          word |= (uint64_t)pack16_avx512(y, t.shift, j0 + j, vps, vthr, MODE, t.hi) << j;
        }
        TileEpilogue::store_word(t.bits_row(m), j0, word, n, ones);
      }
      t.store_count(m, ones);
    }
  }
}
#endif

#if defined(__x86_64__) || defined(_M_X64)
// run(std::integral_constant<int, MODE>()) with `mode` (a BitMode) as a compile-time constant, the MODE of
// pack_rows_avx512 / _avx2 and finish_rows_avx2 / _avx512; false (nothing run) for a mode they do not have.
template <class Run>
inline bool with_bit_mode(int mode, Run run) {
  switch (mode) {
    case SIGNED: run(std::integral_constant<int, SIGNED>()); return true;
    case UNSIGNED_GE: run(std::integral_constant<int, UNSIGNED_GE>()); return true;
    case UNSIGNED_GT: run(std::integral_constant<int, UNSIGNED_GT>()); return true;
    case SIGNED_GELU: run(std::integral_constant<int, SIGNED_GELU>()); return true;
    case SIGNED_SCALED: run(std::integral_constant<int, SIGNED_SCALED>()); return true;
    default: return false;
  }
}

// with_bit_mode with the Epilogue's packing BitMode, or −1 (no packing) when it does not pack.
template <class Run>
inline bool with_pack_mode(const Epilogue& e, Run run) {
  if (e.pack_bits) return with_bit_mode(e.pack_mode, run);
  run(std::integral_constant<int, -1>());
  return true;
}
#endif

// finish_row for rows m0 .. m0 + rows − 1 of a tile (raw: [rows, ldr]): one fused call on the AVX2 and AVX-512 paths
// where it applies (the W1A1 Linears: no add_n, mul = ±2, whole vectors of columns), else row by row.
inline void finish_rows(const Epilogue& e, int64_t m0, int rows, int64_t n0, int64_t count, const int32_t* raw,
                        int64_t ldr, float* scratch) {
#if defined(__x86_64__) || defined(_M_X64)
  const bool fusable = !e.add_n && (e.mul == 2 || e.mul == -2);
  if (fusable && g_isa >= AVX512 && kFeatures.avx512bw && count % 16 == 0 &&
      with_pack_mode(e, [&](auto mode) { finish_rows_avx512<decltype(mode)::value>(e, m0, rows, n0, count, raw, ldr); }))
    return;
  if (fusable && g_isa == AVX2 && kFeatures.avx2 && count % 8 == 0 &&
      with_pack_mode(e, [&](auto mode) { finish_rows_avx2<decltype(mode)::value>(e, m0, rows, n0, count, raw, ldr); }))
    return;
#endif
  for (int i = 0; i < rows; ++i) finish_row(e, m0 + i, n0, count, raw + i * ldr, scratch);
}

// A: MR row pointers of type T (uint64 words or u8); W: kernel layout with `gstride` words per group of `group` rows.
constexpr int64_t kSliceBytes = 32768;
template <class Kern, int GROUP, class T, class Tile>
void drive(int64_t M, int64_t N, const T* a, int64_t lda, const uint64_t* w, int64_t gstride, const Epilogue& e,
           int nthreads, Tile tile_fn) {
  constexpr int MR = Kern::MR, NG = Kern::NG;
  // Work items: MC input rows × NC output columns (NC a multiple of the tile width, at least 64 columns), so each
  // item writes whole 256-byte stretches of output rows and the weight slice it reads stays in L1: NC is the
  // largest of NC_MIN, 2·NC_MIN, 4·NC_MIN whose slice fits kSliceBytes (fewer, longer epilogue calls per row).
  constexpr int64_t TILE_COLS = NG * GROUP, NC_MIN = TILE_COLS >= 64 ? TILE_COLS : 64, NC_MAX = 4 * NC_MIN, MC = 64;
  const int64_t col_bytes = gstride * 8 / GROUP;  // weight bytes per output column
  int64_t NC = NC_MIN;
  while (NC < NC_MAX && 2 * NC * col_bytes <= kSliceBytes) NC *= 2;
  const int64_t groups = (N + GROUP - 1) / GROUP;
  // Row chunks: at most MC rows, their number a multiple of the thread count (when there are more rows than one
  // chunk), and the MR-row blocks spread evenly over them, so that the static schedule gives every thread the same
  // number of rows to within one block (544 rows on 2 threads: 10 chunks of 13–14 blocks, 272 / 272 rows, where 64-row
  // chunks gave one thread 288 and the other 256).
  const int64_t blocks = (M + MR - 1) / MR;
  int64_t mchunks = (M + MC - 1) / MC;
  if (mchunks > 1 && nthreads > 1) mchunks = std::min(blocks, (mchunks + nthreads - 1) / nthreads * nthreads);
  // With one row chunk (a short input) the column chunks are the only work items: narrower chunks where their number
  // would leave a thread idle at the end (768 columns in chunks of 256 on 2 threads: 2 + 1)
  while (mchunks == 1 && nthreads > 1 && NC > NC_MIN && (N + NC - 1) / NC % nthreads != 0 &&
         (N + NC - 1) / NC < 4 * nthreads)
    NC /= 2;
  const int64_t nchunks = (N + NC - 1) / NC;
  const int64_t items = nchunks * mchunks;
  const bool prefetch = mchunks <= nthreads;
  const bool parallel = nthreads > 1 && items > 1 && M * N > 4096;
  StealingRanges ranges(items, parallel ? nthreads : 1);
  const int cpu0 = parallel ? caller_cpu() : -1;
#pragma omp parallel num_threads(nthreads) if (parallel)
  {
    spread_team(cpu0);
    for (int k = 0; ;) {
      const int64_t item = ranges.claim(k);
      if (item < 0) break;
      alignas(64) int32_t raw[MR * NC_MAX];  // MR rows × this chunk's columns (row stride NC)
      alignas(64) float row[NC_MAX];          // a packing epilogue's float row
      const int64_t nc = item % nchunks, mc = item / nchunks;
      const int64_t m_begin = std::min(M, blocks * mc / mchunks * MR), m_end = std::min(M, blocks * (mc + 1) / mchunks * MR);
      const int64_t cg0 = nc * (NC / GROUP), cg1 = std::min(groups, cg0 + NC / GROUP), n0 = cg0 * GROUP;
      const int64_t count = std::min(N, cg1 * GROUP) - n0;
      auto run_rows = [&](auto rows, int64_t m) {
        constexpr int R = decltype(rows)::value;
        const T* ar[R];
        for (int i = 0; i < R; ++i) ar[i] = a + (m + i) * lda;
        int64_t g = cg0;
        for (; g + NG <= cg1; g += NG)
          tile_fn(rows, std::integral_constant<int, NG>(), ar, w + g * gstride, raw + (g - cg0) * GROUP, NC);
        for (; g < cg1; ++g)
          tile_fn(rows, std::integral_constant<int, 1>(), ar, w + g * gstride, raw + (g - cg0) * GROUP, NC);
        finish_rows(e, m, R, n0, count, raw, NC, row);
      };
      // With one row chunk per thread (a few sequences: each weight read once per thread per forward, from L3 or
      // DRAM, where other tenants' data evict it between forwards), the next item's weight slice (contiguous groups)
      // is prefetched into L2 a piece per row block of this one, so that its first row block does not wait for
      // memory. With more row chunks the slices are read again from L2 anyway.
      const char *pf = nullptr, *pf_end = nullptr;
      int64_t pf_step = 0;
      if (prefetch && item + 1 < items) {
        const int64_t next_nc = (item + 1) % nchunks, ng0 = next_nc * (NC / GROUP);
        const int64_t ng1 = std::min(groups, ng0 + NC / GROUP);
        pf = reinterpret_cast<const char*>(w + ng0 * gstride);
        pf_end = reinterpret_cast<const char*>(w + ng1 * gstride);
        const int64_t blocks = std::max<int64_t>(1, (m_end - m_begin + MR - 1) / MR);
        pf_step = ((pf_end - pf) / blocks + 63) / 64 * 64;
      }
      auto prefetch_piece = [&]() {
        const char* stop = pf_end - pf > pf_step ? pf + pf_step : pf_end;
        for (; pf < stop; pf += 64) __builtin_prefetch(pf, 0, 2);
      };
      int64_t m = m_begin;
      for (; m + MR <= m_end; m += MR) {
        if (pf) prefetch_piece();
        run_rows(std::integral_constant<int, MR>(), m);
      }
      for (; m < m_end; ++m) run_rows(std::integral_constant<int, 1>(), m);
    }
  }
}

template <class Kern, int OP>
void bits_gemm_with(int64_t M, int64_t N, const uint64_t* a, int64_t kw, const uint64_t* w, const Epilogue& e,
                    int nthreads) {
  drive<Kern, kBitsGroup>(M, N, a, kw, w, kw * kBitsGroup, e, nthreads,
                          [&](auto r, auto g, const uint64_t* const* ar, const uint64_t* wg, int32_t* raw, int64_t ldo) {
                            Kern::template tile<decltype(r)::value, decltype(g)::value, OP>(ar, wg, kw * kBitsGroup, kw, raw, ldo);
                          });
}

#if defined(__x86_64__) || defined(_M_X64)
// AVX2 nibble-table XNOR/AND-popcount ("table" path of bits_gemm, for M ≥ kTableMinRows).
// AVX2 has no vector popcount, and the nibble-table popcount of the other paths costs 8 vector ops per 256 bit-MACs
// (combine, shift, 2 masks, 2 vpshufb, 2 adds). Here the combine and the popcount are one vpshufb: the 16-byte table
// of an input nibble pair (v₁, v₂) (two input rows, the same nibble position), T[x] = f(v₁, x) + 16·f(v₂, x) with
// f(v, x) = popcount(v OP x), is looked up with 32 weight nibbles (one byte each, the same nibble position of 32
// output rows), so one vpshufb + one vpaddb count 2 input rows × 32 output rows × 4 bits into 4-bit counters, split
// into byte sums every 3 steps (≤ 12 each): per 1,024 bit-MACs 4 vpshufb + 6⅔ other vector ops, the table fetched
// once per (input pair, step) and the weights once per step for both pairs (BitsAvx2PairTable).
//   weights: the bits layout transposed into nibble-index blocks wi[ceil(N/32)][S][32] (S = 16·Kw nibble steps;
//            byte r of step s = nibble s of row 32b + r), O(N·K): once in the runtime's plan, else per call;
//   inputs:  per pair of rows and step, the offset of its table (nibble_pair_offsets4).
// Byte counters take ≤ 4 per step: flushed every 63 steps to u16 (stack), which hold up to 2^16 − 1 bits
// (kw ≤ kTableMaxWords).
constexpr int64_t kTableMinRows = 8, kTableMaxWords = 1020;  // 1020·64 = 65280 bits


// 32 rows (4 groups of the bits layout, zeros past `groups`) × Kw words → out[S][32] nibble bytes. Per word: an
// in-lane transpose of the 32 × 8 bytes (rows 0–15 in the low lanes, 16–31 in the high lanes), then lo / hi nibbles.
__attribute__((target("avx2"))) void nibble_block(const uint64_t* w, int64_t kw, int64_t groups, int64_t block,
                                                  uint8_t* out) {
  const __m256i pairs = _mm256_setr_epi8(0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15, 0, 8, 1, 9, 2, 10, 3,
                                         11, 4, 12, 5, 13, 6, 14, 7, 15);
  const __m256i low = _mm256_set1_epi8(0x0f);
  for (int64_t k = 0; k < kw; ++k) {
    __m256i y[8];  // y[q]: rows 4q, 4q+1 (low lane), 4q+2, 4q+3 (high lane)
    for (int q = 0; q < 8; ++q) {
      const int64_t g = block * 4 + q / 2;
      y[q] = g < groups ? _mm256_loadu_si256((const __m256i*)(w + (g * kw + k) * kBitsGroup + (q % 2) * 4))
                        : _mm256_setzero_si256();
    }
    __m256i p[8];  // p[t]: rows 2t, 2t+1 (low lane) and 2t+16, 2t+17 (high lane), then byte pairs (b of 2t, b of 2t+1)
    for (int q = 0; q < 4; ++q) {
      p[2 * q] = _mm256_shuffle_epi8(_mm256_permute2x128_si256(y[q], y[q + 4], 0x20), pairs);
      p[2 * q + 1] = _mm256_shuffle_epi8(_mm256_permute2x128_si256(y[q], y[q + 4], 0x31), pairs);
    }
    __m256i lo4[4], hi4[4];  // rows 4r..4r+3 of bytes 0–3 / 4–7, one dword per byte position
    for (int r = 0; r < 4; ++r) {
      lo4[r] = _mm256_unpacklo_epi16(p[2 * r], p[2 * r + 1]);
      hi4[r] = _mm256_unpackhi_epi16(p[2 * r], p[2 * r + 1]);
    }
    __m256i rows8[2][4];  // [rows 0–7 / 8–15][byte pair 01, 23, 45, 67]: one qword (8 rows) per byte position
    for (int h = 0; h < 2; ++h) {
      rows8[h][0] = _mm256_unpacklo_epi32(lo4[2 * h], lo4[2 * h + 1]);
      rows8[h][1] = _mm256_unpackhi_epi32(lo4[2 * h], lo4[2 * h + 1]);
      rows8[h][2] = _mm256_unpacklo_epi32(hi4[2 * h], hi4[2 * h + 1]);
      rows8[h][3] = _mm256_unpackhi_epi32(hi4[2 * h], hi4[2 * h + 1]);
    }
    uint8_t* o = out + k * 16 * 32;
    for (int pr = 0; pr < 4; ++pr)
      for (int odd = 0; odd < 2; ++odd) {
        const int b = 2 * pr + odd;  // byte b of the word: nibbles 2b (bits 8b..8b+3) and 2b+1
        const __m256i bytes = odd ? _mm256_unpackhi_epi64(rows8[0][pr], rows8[1][pr])
                                  : _mm256_unpacklo_epi64(rows8[0][pr], rows8[1][pr]);
        _mm256_store_si256((__m256i*)(o + (2 * b) * 32), _mm256_and_si256(bytes, low));
        _mm256_store_si256((__m256i*)(o + (2 * b + 1) * 32), _mm256_and_si256(_mm256_srli_epi16(bytes, 4), low));
      }
  }
}

// The pair tables (one 16-byte table per input nibble pair and OP, 8 KiB in all) and the tile. Counting one input
// row per lookup (the kernel before stop 31: 8 vpshufb + 8 vpaddb and 4 table fetches per 1,024 bit-MACs) measured
// 1.16–1.18× the time of this tile per step on an AMD EPYC Zen 3 (L1-resident micro-benchmark, K = 768 and 3,072).
struct PairTables {
  alignas(32) uint8_t t[2][256][16];  // [OP][v₁ + 16·v₂][x]: f(v₁, x) + 16·f(v₂, x); broadcast to both 128-bit lanes
  PairTables() {
    for (int op = 0; op < 2; ++op)
      for (int v = 0; v < 256; ++v)
        for (int x = 0; x < 16; ++x) {
          const int w = x & 15, v1 = v & 15, v2 = v >> 4;
          const int f1 = __builtin_popcount(op == 0 ? v1 ^ w : v1 & w);
          const int f2 = __builtin_popcount(op == 0 ? v2 ^ w : v2 & w);
          t[op][v][x] = (uint8_t)(f1 + 16 * f2);
        }
  }
};
const PairTables kPairTables;

// Four input rows' Kw words (rows ≥ `rows` read as 0) → per step the table offsets of the row pairs (0, 1) and (2, 3),
// interleaved: out[s][p] = 2·(nibble s of row 2p) + 32·(nibble s of row 2p + 1), in 8-byte units (the 16-byte table
// of the pair; nibble j of word k is step 16k + j).
__attribute__((target("avx2"))) void nibble_pair_offsets4(const uint64_t* a, int64_t kw, int rows, uint16_t* out) {
  const __m128i low = _mm_set1_epi8(0x0f);
  for (int64_t k = 0; k < kw; k += 2) {  // kw is a multiple of 4
    __m256i n[4][2];  // [row][steps 16k.. / 16k+16..], one u16 per step
    for (int r = 0; r < 4; ++r) {
      const __m128i v = r < rows ? _mm_loadu_si128((const __m128i*)(a + r * kw + k)) : _mm_setzero_si128();
      const __m128i lo = _mm_and_si128(v, low), hi = _mm_and_si128(_mm_srli_epi16(v, 4), low);
      n[r][0] = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(lo, hi));
      n[r][1] = _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(lo, hi));
    }
    for (int h = 0; h < 2; ++h) {
      const __m256i p0 = _mm256_add_epi16(_mm256_slli_epi16(n[0][h], 1), _mm256_slli_epi16(n[1][h], 5));
      const __m256i p1 = _mm256_add_epi16(_mm256_slli_epi16(n[2][h], 1), _mm256_slli_epi16(n[3][h], 5));
      const __m256i lo = _mm256_unpacklo_epi16(p0, p1), hi = _mm256_unpackhi_epi16(p0, p1);  // in-lane halves
      __m256i* dst = (__m256i*)(out + (16 * k + 16 * h) * 2);
      _mm256_storeu_si256(dst, _mm256_permute2x128_si256(lo, hi, 0x20));
      _mm256_storeu_si256(dst + 1, _mm256_permute2x128_si256(lo, hi, 0x31));
    }
  }
}

// The tile: out[i][32j + r] = Σ_s f(nibble s of input row i, wi[j][s][r]) for 4 input rows (2 pairs) × 2 blocks of 32
// output rows; ao: the pairs' table offsets interleaved, [S][2]. Per step the two weight index vectors are loaded once
// and looked up with both pairs' tables (4 vpshufb); each (pair, block) sums 3 steps into 4-bit counters `nib`
// (≤ 12 each: no carry between the nibbles), then folds them into two byte sums without masking:
//   A += nib          (byte-wise, mod 256: Σf₁ + 16·Σf₂)
//   H += nib >>₁₆ 4   (a 16-bit shift: the even byte gets Σf₂ of its own high nibble + 16·Σf₁ of the odd byte's,
//                      the odd byte Σf₂ alone)
// and per 63 steps (byte sums ≤ 4·63 = 252) `decode_add` recovers both counts of both bytes exactly from A and H,
// all mod 256 per byte: with A = (Ae, Ao) and H = (He, Ho) the even / odd bytes of a 16-bit lane,
//   first row's counts  L = (Ae − 16·He, Ao − 16·Ho)   = A −₈ ((H <<₁₆ 4) & 0xF0F0)
//   second row's counts U = (He − 16·Ao, Ho)           = H −₈ ((A >>₁₆ 4) & 0x00F0)
// (−₈: byte-wise; 16·lo_odd ≡ 16·Ao and 16·hi_even ≡ 16·He mod 256, which removes the chain of the earlier decode),
// and adds each byte pair (even, odd) to two 16-bit sums, X += pair (even + 256·odd, mod 2^16) and Y += odd, so that
// the even sum is X − 256·Y at the end (exact: every sum < 2^16). 12 vector ops per (pair, block), 4 of them shifts
// (stop 35; before: 17, 5 shifts, which unpacked the four counts into 16-bit lanes per 63 steps; stop 34's decode
// before that packed them into bytes and unpacked those again).
// Per 1,024 bit-MACs (one step): 4 vpshufb + 2⅔ + 2⅔ vpaddb + 1⅓ vpsrlw, 2 weight and 2 table loads; the tile before
// (one pair at a time, lo / hi split with masks: 4 vpshufb + 4 + 3⅓ ops, 4 weight and 2 table loads) took 1.22–1.31×
// the time per tile on an AMD EPYC Zen 3 (one core, L1-resident micro-benchmark, K = 768, 3,072 and 3,328: 580 →
// 750 G binary MACs/s per core at K = 3,072).
struct BitsAvx2PairTable {
  static constexpr int MR = 4, NB = 2;  // two pairs of input rows × NB blocks of 32 output rows
  // decode the two byte sums of one (pair, block) into the counts of its first (L) and second (U) input row, a byte
  // per output row (even / odd output rows 2c, 2c + 1 in 16-bit lane c), and add them to that row's 16-bit sums
  // [0] (X: even + 256·odd, mod 2^16) and [1] (Y: odd) — u0 for the first row, u1 for the second
  __attribute__((target("avx2"), always_inline)) static inline void decode_add(__m256i A, __m256i H, __m256i* u0,
                                                                                __m256i* u1) {
    const __m256i f0 = _mm256_set1_epi16((short)0xF0F0), f00 = _mm256_set1_epi16(0x00F0);
    const __m256i L = _mm256_sub_epi8(A, _mm256_and_si256(_mm256_slli_epi16(H, 4), f0));
    const __m256i U = _mm256_sub_epi8(H, _mm256_and_si256(_mm256_srli_epi16(A, 4), f00));
    u0[0] = _mm256_add_epi16(u0[0], L);
    u0[1] = _mm256_add_epi16(u0[1], _mm256_srli_epi16(L, 8));
    u1[0] = _mm256_add_epi16(u1[0], U);
    u1[1] = _mm256_add_epi16(u1[1], _mm256_srli_epi16(U, 8));
  }
  template <int R, int G>
  __attribute__((target("avx2"))) static void tile(const uint16_t* ao, const uint8_t* wi, int64_t bstride,
                                                   int64_t steps, const uint8_t* tables, int32_t* out, int64_t ldo) {
    static_assert(R == 4 && G == 2, "two row pairs, two blocks");
    const __m256i zero = _mm256_setzero_si256();
    // 16-bit sums per input row and block (decode_add): [X = even + 256·odd, Y = odd] for output rows 2c, 2c + 1 in
    // lane c
    __m256i wide[4][G][2];
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < G; ++j) wide[i][j][0] = wide[i][j][1] = zero;
    for (int64_t s0 = 0; s0 < steps; s0 += 63) {
      const int64_t s1 = std::min(steps, s0 + 63);
      __m256i A00 = zero, A01 = zero, A10 = zero, A11 = zero, H00 = zero, H01 = zero, H10 = zero, H11 = zero;
      int64_t g = s0;
      const int64_t groups = (s1 - s0) / 3;
      if (groups > 0) {
        const uint16_t* ap = ao + 2 * s0;
        const uint8_t* wp = wi + s0 * 32;
        const uint16_t* const aend = ap + 6 * groups;
        // ymm8, 9: weights of blocks 0, 1; ymm10: table; ymm11: temp; ymm12–15: nib[p][j]
#define HFB_STEP(OFF_A0, OFF_A1, OFF_W, FIRST)                                   \
        "vmovdqa " #OFF_W "(%[wp]), %%ymm8\n\t"                                    \
        "vmovdqa " #OFF_W "(%[wp],%[bs]), %%ymm9\n\t"                              \
        "movzwl " #OFF_A0 "(%[ap]), %%eax\n\t"                                     \
        "movzwl " #OFF_A1 "(%[ap]), %%ecx\n\t"                                     \
        "vbroadcasti128 (%[tb],%%rax,8), %%ymm10\n\t"                              \
        FIRST
#define HFB_FIRST                                                                \
        "vpshufb %%ymm8, %%ymm10, %%ymm12\n\t"                                     \
        "vpshufb %%ymm9, %%ymm10, %%ymm13\n\t"                                     \
        "vbroadcasti128 (%[tb],%%rcx,8), %%ymm10\n\t"                              \
        "vpshufb %%ymm8, %%ymm10, %%ymm14\n\t"                                     \
        "vpshufb %%ymm9, %%ymm10, %%ymm15\n\t"
#define HFB_NEXT                                                                 \
        "vpshufb %%ymm8, %%ymm10, %%ymm11\n\t"                                     \
        "vpshufb %%ymm9, %%ymm10, %%ymm10\n\t"                                     \
        "vpaddb %%ymm11, %%ymm12, %%ymm12\n\t"                                     \
        "vpaddb %%ymm10, %%ymm13, %%ymm13\n\t"                                     \
        "vbroadcasti128 (%[tb],%%rcx,8), %%ymm10\n\t"                              \
        "vpshufb %%ymm8, %%ymm10, %%ymm11\n\t"                                     \
        "vpshufb %%ymm9, %%ymm10, %%ymm10\n\t"                                     \
        "vpaddb %%ymm11, %%ymm14, %%ymm14\n\t"                                     \
        "vpaddb %%ymm10, %%ymm15, %%ymm15\n\t"
        asm volatile(
            "1:\n\t"
            HFB_STEP(0, 2, 0, HFB_FIRST)
            HFB_STEP(4, 6, 32, HFB_NEXT)
            HFB_STEP(8, 10, 64, HFB_NEXT)
            "vpaddb %%ymm12, %[a00], %[a00]\n\t"
            "vpsrlw $4, %%ymm12, %%ymm12\n\t"
            "vpaddb %%ymm12, %[h00], %[h00]\n\t"
            "vpaddb %%ymm13, %[a01], %[a01]\n\t"
            "vpsrlw $4, %%ymm13, %%ymm13\n\t"
            "vpaddb %%ymm13, %[h01], %[h01]\n\t"
            "vpaddb %%ymm14, %[a10], %[a10]\n\t"
            "vpsrlw $4, %%ymm14, %%ymm14\n\t"
            "vpaddb %%ymm14, %[h10], %[h10]\n\t"
            "vpaddb %%ymm15, %[a11], %[a11]\n\t"
            "vpsrlw $4, %%ymm15, %%ymm15\n\t"
            "vpaddb %%ymm15, %[h11], %[h11]\n\t"
            "addq $12, %[ap]\n\t"
            "addq $96, %[wp]\n\t"
            "cmpq %[ae], %[ap]\n\t"
            "jb 1b\n\t"
            : [a00] "+x"(A00), [a01] "+x"(A01), [a10] "+x"(A10), [a11] "+x"(A11), [h00] "+x"(H00),
              [h01] "+x"(H01), [h10] "+x"(H10), [h11] "+x"(H11), [ap] "+r"(ap), [wp] "+r"(wp)
            : [ae] "r"(aend), [bs] "r"(bstride), [tb] "r"(tables)
            : "rax", "rcx", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "memory", "cc");
#undef HFB_STEP
#undef HFB_FIRST
#undef HFB_NEXT
        g += 3 * groups;
      }
      for (; g < s1; g += 3) {  // fewer than 3 steps left (steps not a multiple of 3 in this chunk)
        __m256i nib[2][G] = {{zero, zero}, {zero, zero}};
        const int64_t g1 = std::min(s1, g + 3);
        for (int64_t s = g; s < g1; ++s)
          for (int p = 0; p < 2; ++p) {
            const __m256i t =
                _mm256_broadcastsi128_si256(_mm_load_si128((const __m128i*)(tables + (size_t)ao[2 * s + p] * 8)));
            for (int j = 0; j < G; ++j)
              nib[p][j] = _mm256_add_epi8(
                  nib[p][j], _mm256_shuffle_epi8(t, _mm256_load_si256((const __m256i*)(wi + j * bstride + s * 32))));
          }
        A00 = _mm256_add_epi8(A00, nib[0][0]); H00 = _mm256_add_epi8(H00, _mm256_srli_epi16(nib[0][0], 4));
        A01 = _mm256_add_epi8(A01, nib[0][1]); H01 = _mm256_add_epi8(H01, _mm256_srli_epi16(nib[0][1], 4));
        A10 = _mm256_add_epi8(A10, nib[1][0]); H10 = _mm256_add_epi8(H10, _mm256_srli_epi16(nib[1][0], 4));
        A11 = _mm256_add_epi8(A11, nib[1][1]); H11 = _mm256_add_epi8(H11, _mm256_srli_epi16(nib[1][1], 4));
      }
      const __m256i As[2][2] = {{A00, A01}, {A10, A11}}, Hs[2][2] = {{H00, H01}, {H10, H11}};
      for (int p = 0; p < 2; ++p)
        for (int j = 0; j < G; ++j) decode_add(As[p][j], Hs[p][j], wide[2 * p][j], wide[2 * p + 1][j]);
    }
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < G; ++j) {
        // even = X − 256·Y, odd = Y, interleaved: per 128-bit half, lo = output rows 0–7 (16–23), hi = rows 8–15 (24–31)
        const __m256i odd = wide[i][j][1], even = _mm256_sub_epi16(wide[i][j][0], _mm256_slli_epi16(odd, 8));
        const __m256i lo = _mm256_unpacklo_epi16(even, odd);
        const __m256i hi = _mm256_unpackhi_epi16(even, odd);
        int32_t* o = out + i * ldo + j * 32;
        _mm256_storeu_si256((__m256i*)o, _mm256_cvtepu16_epi32(_mm256_castsi256_si128(lo)));
        _mm256_storeu_si256((__m256i*)(o + 8), _mm256_cvtepu16_epi32(_mm256_castsi256_si128(hi)));
        _mm256_storeu_si256((__m256i*)(o + 16), _mm256_cvtepu16_epi32(_mm256_extracti128_si256(lo, 1)));
        _mm256_storeu_si256((__m256i*)(o + 24), _mm256_cvtepu16_epi32(_mm256_extracti128_si256(hi, 1)));
      }
  }
};

// The nibble-index blocks of a whole weight matrix, made once (nibble_layout): the encoder runtime's plan keeps them
// beside the bits layout, so that its calls skip the per-call transposition. Blocks of 32 rows, as many as whole
// column chunks (NB = 2 blocks) need, block b at b · 16·Kw·32 bytes (rows past N zero); sizes in bytes.
int64_t nibble_layout_bytes(int64_t N, int64_t K) { return (N + 63) / 64 * 2 * (16 * bits_words(K)) * 32; }

void nibble_layout(const uint64_t* w, int64_t N, int64_t K, uint8_t* out, int nthreads) {
  const int64_t kw = bits_words(K), bstride = 16 * kw * 32, groups = (N + kBitsGroup - 1) / kBitsGroup;
  const int64_t blocks = (N + 63) / 64 * 2;
#pragma omp parallel for num_threads(nthreads) if (nthreads > 1 && blocks > 1) schedule(static)
  for (int64_t b = 0; b < blocks; ++b) nibble_block(w, kw, groups, b, out + b * bstride);
}

// wnib: the weights' nibble_layout (32-byte aligned), or null: each thread transposes the column chunks it works on.
template <int OP>
void bits_gemm_table(int64_t M, int64_t N, const uint64_t* a, int64_t kw, const uint64_t* w, const Epilogue& e,
                     int nthreads, const uint8_t* wnib) {
  using Kern = BitsAvx2PairTable;
  constexpr int MR = Kern::MR, NB = Kern::NB;
  static_assert(MR == 4, "nibble_pair_offsets4 interleaves 2 pairs of rows");
  constexpr int64_t NC = NB * 32, MC = 64;
  // rows padded to MR (offset 0) and 32-row blocks to NB (zero blocks): one tile shape; the padding is not stored.
  // Work items: MC rows × NC columns, column chunk major, so that a thread transposes the weights of a chunk once
  // into its own (L1/L2-resident) buffer and sweeps the rows with them.
  const int64_t steps = 16 * kw, bstride = steps * 32, groups = (N + kBitsGroup - 1) / kBitsGroup;
  const int64_t nchunks = (N + NC - 1) / NC, mtiles = (M + MR - 1) / MR;
  static thread_local std::vector<uint64_t> buffer;  // the caller's scratch() holds `a`: a buffer of its own
  const size_t bytes = (size_t)(mtiles * MR * steps) + 64;
  if (buffer.size() * 8 < bytes) buffer.resize(bytes / 8 + 1);
  uint16_t* ao = reinterpret_cast<uint16_t*>(buffer.data());  // [tile][step][pair]: 2 · 2 bytes per step and tile
  const uint8_t* tables = &kPairTables.t[OP][0][0];
  const int64_t mchunks = (M + MC - 1) / MC, items = nchunks * mchunks;
  StealingRanges ranges(items, nthreads > 1 && items > 1 ? nthreads : 1);
#pragma omp parallel num_threads(nthreads) if (nthreads > 1 && items > 1)
  {
#pragma omp for schedule(static)
    for (int64_t t = 0; t < mtiles; ++t)
      nibble_pair_offsets4(a + t * MR * kw, kw, (int)std::min<int64_t>(MR, M - t * MR), ao + t * 2 * steps);
    static thread_local std::vector<uint64_t> chunk_buffer;
    const size_t chunk_bytes = wnib ? 0 : (size_t)(NB * bstride) + 32;
    if (chunk_buffer.size() * 8 < chunk_bytes) chunk_buffer.resize(chunk_bytes / 8 + 1);
    uint8_t* own = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(chunk_buffer.data()) + 31) & ~(uintptr_t)31);
    const uint8_t* wi = own;
    int64_t have = -1;
    int k = 0;
    for (int64_t item; (item = ranges.claim(k)) >= 0;) {
      alignas(64) int32_t raw[MR * NC];
      alignas(64) float row[NC];  // a packing epilogue's float row
      const int64_t nc = item / mchunks, m_begin = item % mchunks * MC, m_end = std::min(M, m_begin + MC);
      const int64_t n0 = nc * NC, count = std::min(N - n0, NC);
      if (wnib) {
        wi = wnib + nc * NB * bstride;
      } else if (nc != have) {
        for (int j = 0; j < NB; ++j) nibble_block(w, kw, groups, nc * NB + j, own + j * bstride);
        have = nc;
      }
      // the next column chunk's weights (from the plan's layout, usually not cached: a BERT-base encoder's nibble
      // layouts are 42 MB) prefetched into L2 while this chunk's rows run, a slice per tile
      const uint8_t* next = wnib && nc + 1 < nchunks ? wnib + (nc + 1) * NB * bstride : nullptr;
      const int64_t lines = NB * bstride / 64;
      for (int64_t m = m_begin; m < m_end; m += MR) {
        if (next)
          for (int64_t l = m / MR * lines / mtiles, l1 = (m / MR + 1) * lines / mtiles; l < l1; ++l)
            _mm_prefetch((const char*)(next + l * 64), _MM_HINT_T1);
        Kern::tile<MR, NB>(ao + m / MR * 2 * steps, wi, bstride, steps, tables, raw, NC);
        finish_rows(e, m, (int)std::min<int64_t>(MR, m_end - m), n0, count, raw, NC, row);
      }
    }
  }
}
#endif

template <int OP>
void bits_gemm(int isa, int64_t M, int64_t N, const uint64_t* a, int64_t kw, const uint64_t* w, const Epilogue& e,
               int nthreads, const uint8_t* wnib = nullptr) {
  switch (isa) {
#if defined(__x86_64__) || defined(_M_X64)
    case AVX512_VPOPCNT:
    case AVX512_AMX: bits_gemm_with<BitsVpopcnt<PopcntNative>, OP>(M, N, a, kw, w, e, nthreads); break;
    case AVX512_VPOPCNT_EMULATED: bits_gemm_with<BitsVpopcnt<PopcntEmulated>, OP>(M, N, a, kw, w, e, nthreads); break;
    case AVX512: bits_gemm_with<BitsAvx512, OP>(M, N, a, kw, w, e, nthreads); break;
    case AVX2:
      if (M >= kTableMinRows && kw <= kTableMaxWords)
        bits_gemm_table<OP>(M, N, a, kw, w, e, nthreads, wnib);
      else
        bits_gemm_with<BitsAvx2, OP>(M, N, a, kw, w, e, nthreads);
      break;
#endif
#if defined(__aarch64__)
    case NEON: bits_gemm_with<BitsNeon, OP>(M, N, a, kw, w, e, nthreads); break;
#endif
    default: bits_gemm_with<BitsPortable, OP>(M, N, a, kw, w, e, nthreads); break;
  }
}

// W1 × u8 by lookup tables (run_w1a8's AVX2 and AVX-512 paths for M ≥ kLutMinRows); needs Epilogue / finish_row.
#include "lut_gemm.h"
// W1 × u8 on Intel AMX tiles (the avx512_amx path, with the plan's "amx" weight layout).
#include "amx_gemm.h"

template <class Kern>
void nib_gemm_with(int64_t M, int64_t N, const uint8_t* u, int64_t lu, int64_t steps, int64_t gstride,
                   const uint64_t* w, const Epilogue& e, int nthreads) {
  drive<Kern, kNibGroup>(M, N, u, lu, w, gstride, e, nthreads,
                         [&](auto r, auto g, const uint8_t* const* ur, const uint64_t* wg, int32_t* raw, int64_t ldo) {
                           Kern::template tile<decltype(r)::value, decltype(g)::value>(ur, wg, gstride, steps, raw, ldo);
                         });
}

template <bool BYTES>
void nib_gemm(int isa, int64_t M, int64_t N, const uint8_t* u, int64_t lu, int64_t steps, const uint64_t* w,
              const Epilogue& e, int nthreads) {
  const int64_t gstride = BYTES ? steps * 8 : steps;  // words per 16-row group
#if defined(__aarch64__)
  if (isa == NEON && !BYTES) return nib_gemm_with<NibNeon>(M, N, u, lu, steps, gstride, w, e, nthreads);
#endif
#if defined(__x86_64__) || defined(_M_X64)
  if (isa >= AVX512 && kFeatures.vnni)
    nib_gemm_with<NibAvx512<true, BYTES>>(M, N, u, lu, steps, gstride, w, e, nthreads);
  else if (isa >= AVX512)
    nib_gemm_with<NibAvx512<false, BYTES>>(M, N, u, lu, steps, gstride, w, e, nthreads);
  else if (isa == AVX2)
    nib_gemm_with<NibAvx2<BYTES>>(M, N, u, lu, steps, gstride, w, e, nthreads);
  else
#endif
    nib_gemm_with<NibPortable<BYTES>>(M, N, u, lu, steps, gstride, w, e, nthreads);
}

// ------------------------------------------------------------------------------------------------------------------
// Input quantization into scratch.


// bits[m, k] = 1 iff  SIGNED: x − β ≥ 0;  UNSIGNED_GE: x − β ≥ thr;  UNSIGNED_GT: (x − β)/s > thr;
//   SIGNED_SCALED (the encoder runtime only: BiT's elastic 1-bit Q, K, V): (x − β)/s ≥ 0;
//   SIGNED_GELU (the encoder runtime only, `shift` = the two threshold rows [lo; hi] of length K each):
//   x ≤ lo_k or x ≥ hi_k, which is GELU(x) − β ≥ 0 with the GELU folded into the thresholds (runtime.py,
//   `gelu_sign_thresholds`); a ±1 input like SIGNED everywhere else.
// Returns the popcount of the row. Scalar version (and the tail of the vector one).
// SIGNED_GELU reads its lower thresholds at shift[k] and its upper ones at shift[hi + k] (hi: the row length K when a
// whole row is packed; a chunk of a row passes shift + n0 and the full length).
inline bool bit_of(float x, const float* shift, int64_t k, float s, float thr, int mode, int64_t hi) {
  if (mode == SIGNED_GELU) return x <= shift[k] || x >= shift[hi + k];
  float v = shift ? x - shift[k] : x;
  return mode == SIGNED ? v >= 0.0f : mode == UNSIGNED_GE ? v >= thr : mode == SIGNED_SCALED ? v / s >= 0.0f : v / s > thr;
}

int64_t pack_row_scalar(const float* row, int64_t from, int64_t K, const float* shift, float s, float thr, int mode,
                        uint8_t* out, int64_t hi) {
  int64_t count = 0;
  for (int64_t k = from; k < K; ++k) {
    bool on = bit_of(row[k], shift, k, s, thr, mode, hi);
    out[k >> 3] |= (uint8_t)on << (k & 7);
    count += on;
  }
  return count;
}

#if defined(__x86_64__) || defined(_M_X64)
__attribute__((target("avx512f,avx512bw"))) int64_t pack_row_avx512(const float* row, int64_t K, const float* shift,
                                                                     float s, float thr, int mode, uint8_t* out,
                                                                     int64_t hi) {
  const __m512 vthr = _mm512_set1_ps(mode == SIGNED ? 0.0f : thr), vs = _mm512_set1_ps(s);
  int64_t count = 0, k = 0;
  for (; k + 16 <= K; k += 16) {
    const __mmask16 bits = pack16_avx512(_mm512_loadu_ps(row + k), shift, k, vs, vthr, mode, hi);
    std::memcpy(out + k / 8, &bits, 2);  // k is a multiple of 16: two whole bytes, LSB first
    count += __builtin_popcount(bits);
  }
  return count + pack_row_scalar(row, k, K, shift, s, thr, mode, out, hi);
}

__attribute__((target("avx2"))) int64_t pack_row_avx2(const float* row, int64_t K, const float* shift, float s,
                                                       float thr, int mode, uint8_t* out, int64_t hi) {
  const __m256 vthr = _mm256_set1_ps(mode == SIGNED ? 0.0f : thr), vs = _mm256_set1_ps(s);
  int64_t count = 0, k = 0;
  for (; k + 8 <= K; k += 8) {
    const int bits = pack8_avx2(_mm256_loadu_ps(row + k), shift, k, vs, vthr, mode, hi);
    out[k / 8] = (uint8_t)bits;  // k is a multiple of 8: one whole byte, LSB first
    count += __builtin_popcount((unsigned)bits);
  }
  return count + pack_row_scalar(row, k, K, shift, s, thr, mode, out, hi);
}
#endif

#if defined(__aarch64__)
// 8 inputs per step: the two compare masks (all ones where the bit is set) weighted 1, 2, 4, 8 and 16, 32, 64, 128,
// summed across lanes into one byte (the same float subtraction, division and comparison as bit_of).
int64_t pack_row_neon(const float* row, int64_t K, const float* shift, float s, float thr, int mode, uint8_t* out,
                      int64_t hi) {
  static const uint32_t kLow[4] = {1, 2, 4, 8}, kHigh[4] = {16, 32, 64, 128};
  const float32x4_t vthr = vdupq_n_f32(mode == SIGNED ? 0.0f : thr), vs = vdupq_n_f32(s);
  const uint32x4_t low = vld1q_u32(kLow), high = vld1q_u32(kHigh);
  int64_t count = 0, k = 0;
  if (mode == SIGNED_GELU) {  // x ≤ lo or x ≥ hi
    for (; k + 8 <= K; k += 8) {
      const float32x4_t v0 = vld1q_f32(row + k), v1 = vld1q_f32(row + k + 4);
      const uint32x4_t m0 = vorrq_u32(vcleq_f32(v0, vld1q_f32(shift + k)), vcgeq_f32(v0, vld1q_f32(shift + hi + k)));
      const uint32x4_t m1 =
          vorrq_u32(vcleq_f32(v1, vld1q_f32(shift + k + 4)), vcgeq_f32(v1, vld1q_f32(shift + hi + k + 4)));
      const uint32_t bits = vaddvq_u32(vorrq_u32(vandq_u32(m0, low), vandq_u32(m1, high)));
      out[k / 8] = (uint8_t)bits;
      count += __builtin_popcount(bits);
    }
    return count + pack_row_scalar(row, k, K, shift, s, thr, mode, out, hi);
  }
  for (; k + 8 <= K; k += 8) {
    float32x4_t v0 = vld1q_f32(row + k), v1 = vld1q_f32(row + k + 4);
    if (shift) {
      v0 = vsubq_f32(v0, vld1q_f32(shift + k));
      v1 = vsubq_f32(v1, vld1q_f32(shift + k + 4));
    }
    uint32x4_t m0, m1;
    if (mode == UNSIGNED_GT) {
      m0 = vcgtq_f32(vdivq_f32(v0, vs), vthr);
      m1 = vcgtq_f32(vdivq_f32(v1, vs), vthr);
    } else if (mode == SIGNED_SCALED) {
      m0 = vcgeq_f32(vdivq_f32(v0, vs), vdupq_n_f32(0.0f));
      m1 = vcgeq_f32(vdivq_f32(v1, vs), vdupq_n_f32(0.0f));
    } else {
      m0 = vcgeq_f32(v0, vthr);
      m1 = vcgeq_f32(v1, vthr);
    }
    const uint32_t bits = vaddvq_u32(vorrq_u32(vandq_u32(m0, low), vandq_u32(m1, high)));
    out[k / 8] = (uint8_t)bits;  // k is a multiple of 8: one whole byte, LSB first
    count += __builtin_popcount(bits);
  }
  return count + pack_row_scalar(row, k, K, shift, s, thr, mode, out, hi);
}
#endif

// One row (or a chunk of one: see bit_of for hi) packed on the ISA's path; returns its number of set bits.
int64_t pack_row_isa(int isa, const float* row, int64_t K, const float* shift, float s, float thr, int mode,
                     uint8_t* out, int64_t hi) {
#if defined(__x86_64__) || defined(_M_X64)
  return isa >= AVX512 ? pack_row_avx512(row, K, shift, s, thr, mode, out, hi)
         : isa == AVX2 ? pack_row_avx2(row, K, shift, s, thr, mode, out, hi)
                       : pack_row_scalar(row, 0, K, shift, s, thr, mode, out, hi);
#elif defined(__aarch64__)
  return isa == NEON ? pack_row_neon(row, K, shift, s, thr, mode, out, hi)
                     : pack_row_scalar(row, 0, K, shift, s, thr, mode, out, hi);
#else
  return pack_row_scalar(row, 0, K, shift, s, thr, mode, out, hi);
#endif
}

#if defined(__x86_64__) || defined(_M_X64)
// pack_rows on the AVX-512 paths: pack_row_avx512's loop with the mode a compile-time constant and the row loop in
// the same function (bytes past the vector part zeroed before the scalar tail ORs into them), where the generic
// pack_rows called pack_row_avx512 once per row: a perf profile of the BiT W1A1 encoder put 39 % of that function's
// samples on its first instructions, and this one took the encoder 0.94–0.955× the time (benchmarks/build_ab.py).
template <int MODE>
__attribute__((target("avx512f,avx512bw"))) void pack_rows_avx512(const float* x, int64_t M, int64_t K, int64_t ldx,
                                                                   const float* shift, float s, float thr,
                                                                   uint8_t* bits, int64_t ld, int64_t* pop,
                                                                   int nthreads) {
  const __m512 vthr = _mm512_set1_ps(MODE == SIGNED ? 0.0f : thr), vs = _mm512_set1_ps(s);
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1 && M > 1 && M * K > 8192)
  for (int64_t m = 0; m < M; ++m) {
    const float* row = x + m * ldx;
    uint8_t* out = bits + m * ld;
    int64_t count = 0, k = 0;
    for (; k + 16 <= K; k += 16) {
      const __mmask16 on = pack16_avx512(_mm512_loadu_ps(row + k), shift, k, vs, vthr, MODE, K);
      std::memcpy(out + k / 8, &on, 2);
      count += __builtin_popcount(on);
    }
    std::memset(out + k / 8, 0, (size_t)(ld - k / 8));
    pop[m] = count + pack_row_scalar(row, k, K, shift, s, thr, MODE, out, K);
  }
}

// pack_rows_avx512's AVX2 twin (pack_row_avx2's loop, 8 inputs per byte).
template <int MODE>
__attribute__((target("avx2"))) void pack_rows_avx2(const float* x, int64_t M, int64_t K, int64_t ldx,
                                                    const float* shift, float s, float thr, uint8_t* bits, int64_t ld,
                                                    int64_t* pop, int nthreads) {
  const __m256 vthr = _mm256_set1_ps(MODE == SIGNED ? 0.0f : thr), vs = _mm256_set1_ps(s);
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1 && M > 1 && M * K > 8192)
  for (int64_t m = 0; m < M; ++m) {
    const float* row = x + m * ldx;
    uint8_t* out = bits + m * ld;
    int64_t count = 0, k = 0;
    for (; k + 8 <= K; k += 8) {
      const int on = pack8_avx2(_mm256_loadu_ps(row + k), shift, k, vs, vthr, MODE, K);
      out[k / 8] = (uint8_t)on;
      count += __builtin_popcount((unsigned)on);
    }
    std::memset(out + k / 8, 0, (size_t)(ld - k / 8));
    pop[m] = count + pack_row_scalar(row, k, K, shift, s, thr, MODE, out, K);
  }
}

#endif

void pack_rows(int isa, const float* x, int64_t M, int64_t K, int64_t ldx, const float* shift, float s, float thr,
               int mode, uint8_t* bits, int64_t ld, int64_t* pop, int nthreads) {
#if defined(__x86_64__) || defined(_M_X64)
  if (isa >= AVX512 && with_bit_mode(mode, [&](auto m) {
        pack_rows_avx512<decltype(m)::value>(x, M, K, ldx, shift, s, thr, bits, ld, pop, nthreads);
      }))
    return;
  if (isa == AVX2 && with_bit_mode(mode, [&](auto m) {
        pack_rows_avx2<decltype(m)::value>(x, M, K, ldx, shift, s, thr, bits, ld, pop, nthreads);
      }))
    return;
#endif
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1 && M > 1 && M * K > 8192)
  for (int64_t m = 0; m < M; ++m) {
    uint8_t* out = bits + m * ld;
    std::memset(out, 0, (size_t)ld);
    pop[m] = pack_row_isa(isa, x + m * ldx, K, shift, s, thr, mode, out, K);
  }
}

// u[m, k] = round(clip((x − β)/s, qn, qp)) + z (round half to even, as torch.round), rows zero-padded to lu bytes;
// returns Σ_k q. Scalar version (and the tail of the vector one).
int64_t quantize_row_scalar(const float* row, int64_t from, int64_t K, const float* shift, float step, int qn, int qp,
                            int z, uint8_t* out) {
  int64_t total = 0;
  for (int64_t k = from; k < K; ++k) {
    float v = shift ? row[k] - shift[k] : row[k];
    // fmax / fmin: a NaN quotient becomes qn, as the vector versions' max_ps(u, qn) gives (no NaN → int cast)
    float q = std::nearbyint(std::fmin(std::fmax(v / step, (float)qn), (float)qp));
    total += (int64_t)q;
    out[k] = (uint8_t)((int)q + z);
  }
  return total;
}

#if defined(__x86_64__) || defined(_M_X64)
__attribute__((target("avx512f,avx512bw"))) int64_t quantize_row_avx512(const float* row, int64_t K,
                                                                         const float* shift, float step, int qn,
                                                                         int qp, int z, uint8_t* out) {
  const __m512 vs = _mm512_set1_ps(step), lo = _mm512_set1_ps((float)qn), hi = _mm512_set1_ps((float)qp);
  const __m512i vz = _mm512_set1_epi32(z);
  __m512i total = _mm512_setzero_si512();
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    __m512 v = _mm512_loadu_ps(row + k);
    if (shift) v = _mm512_sub_ps(v, _mm512_loadu_ps(shift + k));
    v = _mm512_min_ps(_mm512_max_ps(_mm512_div_ps(v, vs), lo), hi);
    __m512i q = _mm512_cvtps_epi32(_mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    total = _mm512_add_epi32(total, q);
    _mm_storeu_si128((__m128i*)(out + k), _mm512_cvtepi32_epi8(_mm512_add_epi32(q, vz)));
  }
  return _mm512_reduce_add_epi32(total) + quantize_row_scalar(row, k, K, shift, step, qn, qp, z, out);
}
#endif

#if defined(__aarch64__)
// 8 inputs per step: the same division and clip as the scalar version, vcvtnq (round half to even), narrowed to u8.
int64_t quantize_row_neon(const float* row, int64_t K, const float* shift, float step, int qn, int qp, int z,
                          uint8_t* out) {
  const float32x4_t vs = vdupq_n_f32(step), lo = vdupq_n_f32((float)qn), hi = vdupq_n_f32((float)qp);
  const int16x8_t vz = vdupq_n_s16((int16_t)z);
  int64x2_t total = vdupq_n_s64(0);
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) {
    float32x4_t v0 = vld1q_f32(row + k), v1 = vld1q_f32(row + k + 4);
    if (shift) {
      v0 = vsubq_f32(v0, vld1q_f32(shift + k));
      v1 = vsubq_f32(v1, vld1q_f32(shift + k + 4));
    }
    const int32x4_t q0 = vcvtnq_s32_f32(vminq_f32(vmaxq_f32(vdivq_f32(v0, vs), lo), hi));
    const int32x4_t q1 = vcvtnq_s32_f32(vminq_f32(vmaxq_f32(vdivq_f32(v1, vs), lo), hi));
    total = vpadalq_s32(vpadalq_s32(total, q0), q1);
    const int16x8_t q = vaddq_s16(vcombine_s16(vmovn_s32(q0), vmovn_s32(q1)), vz);  // q + z ∈ [0, 255]
    vst1_u8(out + k, vmovn_u16(vreinterpretq_u16_s16(q)));
  }
  return vaddvq_s64(total) + quantize_row_scalar(row, k, K, shift, step, qn, qp, z, out);
}
#endif

// dynamic: s_m = max_k |x[m,k] − β_k| / qp (1 when the row is 0), levels ±qp; s_m → scales.
void quantize_rows(int isa, const float* x, int64_t M, int64_t K, int64_t ldx, const float* shift, float s, int qn,
                   int qp, int z, bool dynamic, uint8_t* u, int64_t lu, int64_t* qsum, float* scales, int nthreads) {
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1 && M > 1 && M * K > 8192)
  for (int64_t m = 0; m < M; ++m) {
    const float* row = x + m * ldx;
    uint8_t* out = u + m * lu;
    float step = s;
    if (dynamic) {
      float amax = 0.0f;
#if defined(__x86_64__) || defined(_M_X64)
      if (isa == AVX2 || isa >= AVX512)  // (max is exact in any order: the AVX2 loop serves the AVX-512 paths too)
        amax = abs_max_avx2(row, K, shift);
      else
#endif
        for (int64_t k = 0; k < K; ++k) amax = std::max(amax, std::fabs(shift ? row[k] - shift[k] : row[k]));
      step = amax > 0.0f ? amax / (float)qp : 1.0f;
      scales[m] = step;
    }
#if defined(__x86_64__) || defined(_M_X64)
    qsum[m] = isa >= AVX512 ? quantize_row_avx512(row, K, shift, step, qn, qp, z, out)
              : isa == AVX2 ? quantize_row_avx2(row, K, shift, step, qn, qp, z, out)
                            : quantize_row_scalar(row, 0, K, shift, step, qn, qp, z, out);
#elif defined(__aarch64__)
    qsum[m] = isa == NEON ? quantize_row_neon(row, K, shift, step, qn, qp, z, out)
                          : quantize_row_scalar(row, 0, K, shift, step, qn, qp, z, out);
#else
    qsum[m] = quantize_row_scalar(row, 0, K, shift, step, qn, qp, z, out);
#endif
    std::memset(out + K, 0, (size_t)(lu - K));
  }
}

template <class T>
T* ptr(unsigned long long p) {
  return reinterpret_cast<T*>((uintptr_t)p);
}

// ------------------------------------------------------------------------------------------------------------------
// Bi-Attention (BiBERT, Qin et al. ICLR 2022, eq. 9–10) with 1-bit Q, K, V, all bitwise:
//   q̂ = sign((q − β_q)/α_q) (likewise k̂, v̂; sign(0) = +1), dot_ij = Σ_d q̂_id k̂_jd = D − 2·popcount(q_i XOR k_j),
//   A_ij = 1[dot_ij · c + mask_ij > 0] (c = α_q·α_k·scaling, float32 as given),
//   out_id = α_v · Σ_j A_ij v̂_jd = α_v · (2·popcount(A_i AND V⁺_d) − popcount(A_i)),
// with V⁺_d the bits over keys j of v̂_jd = +1. One (batch, head) per work item.

struct AttnTensor {  // a float32 [B, H, T, D] view with unit stride on D
  const float* p;
  int64_t sb, sh, st;
  const float* shift;  // [H·D] or null
  float step;
};

struct AttnArgs {
  AttnTensor q, k, v;
  int64_t T, D;
  float c, alpha_v;
  const float* mask;  // additive, element (b, h, i, j) at b·ms[0] + h·ms[1] + i·ms[2] + j·ms[3]; or null
  int64_t ms[4];
};

// Sign bits of one row x[b, h, t, 0:D] of an AttnTensor, 64 per word: bit d = ((x − β)/α ≥ 0). `from`: the first
// d not yet packed (the AVX-512 version packs 16 at a time and leaves the tail to the scalar one).
inline void pack_attn_row_scalar(const AttnTensor& x, int64_t b, int64_t h, int64_t t, int64_t D, int64_t from,
                                 uint64_t* words) {
  const float* row = x.p + b * x.sb + h * x.sh + t * x.st;
  const float* shift = x.shift ? x.shift + h * D : nullptr;
  for (int64_t d = from; d < D; ++d) {
    float v = shift ? row[d] - shift[d] : row[d];
    words[d / 64] |= (uint64_t)(v / x.step >= 0.0f) << (d % 64);
  }
}

#if defined(__x86_64__) || defined(_M_X64)
__attribute__((target("avx512f,avx512bw"))) void pack_attn_row_avx512(const AttnTensor& x, int64_t b, int64_t h,
                                                                       int64_t t, int64_t D, uint64_t* words) {
  const float* row = x.p + b * x.sb + h * x.sh + t * x.st;
  const float* shift = x.shift ? x.shift + h * D : nullptr;
  const __m512 step = _mm512_set1_ps(x.step), zero = _mm512_setzero_ps();
  int64_t d = 0;
  for (; d + 16 <= D; d += 16) {
    __m512 v = _mm512_loadu_ps(row + d);
    if (shift) v = _mm512_sub_ps(v, _mm512_loadu_ps(shift + d));
    const uint64_t m = _mm512_cmp_ps_mask(_mm512_div_ps(v, step), zero, _CMP_GE_OQ);
    words[d / 64] |= m << (d % 64);
  }
  pack_attn_row_scalar(x, b, h, t, D, d, words);
}
#endif

template <bool AVX512>
inline void pack_attn_row(const AttnTensor& x, int64_t b, int64_t h, int64_t t, int64_t D, uint64_t* words) {
#if defined(__x86_64__) || defined(_M_X64)
  if constexpr (AVX512)
    pack_attn_row_avx512(x, b, h, t, D, words);
  else
#endif
    pack_attn_row_scalar(x, b, h, t, D, 0, words);
}

template <bool AVX512>
__attribute__((always_inline)) inline void bi_attention_head_body(const AttnArgs& g, int64_t b, int64_t h,
                                                                   uint64_t* work, float* out, int64_t out_stride,
                                                                   float* weights) {
  const int64_t T = g.T, D = g.D, dw = (D + 63) / 64, tw = (T + 63) / 64;
  uint64_t *qb = work, *kb = qb + T * dw, *vb = kb + T * dw, *vt = vb + T * dw, *row = vt + D * tw;
  std::memset(work, 0, (size_t)(3 * T * dw + D * tw) * 8);
  for (int64_t t = 0; t < T; ++t) {
    pack_attn_row<AVX512>(g.q, b, h, t, D, qb + t * dw);
    pack_attn_row<AVX512>(g.k, b, h, t, D, kb + t * dw);
    pack_attn_row<AVX512>(g.v, b, h, t, D, vb + t * dw);
  }
  for (int64_t d = 0; d < D; ++d)  // V⁺ transposed: bit t of word (d, t/64) = v̂[t, d] is +1
    for (int64_t w = 0; w < tw; ++w) {
      uint64_t word = 0;
      for (int64_t t = w * 64; t < std::min(T, w * 64 + 64); ++t) word |= ((vb[t * dw + d / 64] >> (d % 64)) & 1) << (t % 64);
      vt[d * tw + w] = word;
    }
  const float c = g.c, alpha_v = g.alpha_v;
  for (int64_t i = 0; i < T; ++i) {
    const float* mask = g.mask ? g.mask + b * g.ms[0] + h * g.ms[1] + i * g.ms[2] : nullptr;
    const int64_t mj = g.ms[3];
    int64_t selected = 0;
    for (int64_t w = 0; w < tw; ++w) {
      uint64_t word = 0;
      for (int64_t j = w * 64; j < std::min(T, w * 64 + 64); ++j) {
        int64_t ones = 0;
        for (int64_t x = 0; x < dw; ++x) ones += __builtin_popcountll(qb[i * dw + x] ^ kb[j * dw + x]);
        float score = (float)(D - 2 * ones) * c;
        if (mask) score += mask[j * mj];
        word |= (uint64_t)(score > 0.0f) << (j % 64);
      }
      row[w] = word;
      selected += __builtin_popcountll(word);
    }
    float* o = out + i * out_stride;
    for (int64_t d = 0; d < D; ++d) {
      int64_t agree = 0;
      for (int64_t w = 0; w < tw; ++w) agree += __builtin_popcountll(row[w] & vt[d * tw + w]);
      o[d] = alpha_v * (float)(2 * agree - selected);
    }
    float* wr = weights + i * T;
    for (int64_t j = 0; j < T; ++j) wr[j] = (float)((row[j / 64] >> (j % 64)) & 1);
  }
}

#if defined(__x86_64__) || defined(_M_X64)
__attribute__((target("avx512f,avx512bw,popcnt"))) void bi_attention_head_avx512(const AttnArgs& g, int64_t b,
                                                                                   int64_t h, uint64_t* work,
                                                                                   float* out, int64_t out_stride,
                                                                                   float* weights) {
  bi_attention_head_body<true>(g, b, h, work, out, out_stride, weights);
}

__attribute__((target("popcnt"))) void bi_attention_head_popcnt(const AttnArgs& g, int64_t b, int64_t h,
                                                                 uint64_t* work, float* out, int64_t out_stride,
                                                                 float* weights) {
  bi_attention_head_body<false>(g, b, h, work, out, out_stride, weights);
}
#endif

void bi_attention_head_portable(const AttnArgs& g, int64_t b, int64_t h, uint64_t* work, float* out,
                                int64_t out_stride, float* weights) {
  bi_attention_head_body<false>(g, b, h, work, out, out_stride, weights);
}

#ifndef HF_BITGEMM_NO_PYTHON
PyObject* py_bi_attention(PyObject*, PyObject* args) {
  AttnArgs g;
  unsigned long long q, k, v, qs, ks, vs, mask, out, weights;
  long long B, H, T, D, s[9], ms[4];
  float cq, ck, cv, c, alpha_v;
  int nthreads;
  if (!PyArg_ParseTuple(args, "KKKLLLLLLLLLLLLLKKKfffffK(LLLL)KKi", &q, &k, &v, &B, &H, &T, &D, &s[0], &s[1], &s[2],
                        &s[3], &s[4], &s[5], &s[6], &s[7], &s[8], &qs, &ks, &vs, &cq, &ck, &cv, &c, &alpha_v, &mask,
                        &ms[0], &ms[1], &ms[2], &ms[3], &out, &weights, &nthreads))
    return nullptr;
  g.q = {ptr<const float>(q), s[0], s[1], s[2], ptr<const float>(qs), cq};
  g.k = {ptr<const float>(k), s[3], s[4], s[5], ptr<const float>(ks), ck};
  g.v = {ptr<const float>(v), s[6], s[7], s[8], ptr<const float>(vs), cv};
  g.T = T, g.D = D, g.c = c, g.alpha_v = alpha_v, g.mask = ptr<const float>(mask);
  for (int i = 0; i < 4; ++i) g.ms[i] = ms[i];
  const int64_t words = 3 * T * ((D + 63) / 64) + D * ((T + 63) / 64) + (T + 63) / 64;
#if defined(__x86_64__) || defined(_M_X64)
  const bool popcnt = __builtin_cpu_supports("popcnt") && g_isa != PORTABLE;
  const bool avx512 = popcnt && kFeatures.avx512bw && g_isa >= AVX512;
#endif
  float* o = ptr<float>(out);  // [B, T, H, D]
  float* wts = ptr<float>(weights);  // [B, H, T, T]
  Py_BEGIN_ALLOW_THREADS;
#pragma omp parallel num_threads(nthreads) if (nthreads > 1 && B * H > 1)
  {
    uint64_t* work = reinterpret_cast<uint64_t*>(scratch((size_t)words * 8));
#pragma omp for schedule(static)
    for (int64_t bh = 0; bh < B * H; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      float* ob = o + (b * T * H + h) * D;  // row t at ob + t·H·D
      float* wb = wts + bh * T * T;
#if defined(__x86_64__) || defined(_M_X64)
      if (avx512)
        bi_attention_head_avx512(g, b, h, work, ob, H * D, wb);
      else if (popcnt)
        bi_attention_head_popcnt(g, b, h, work, ob, H * D, wb);
      else
#endif
        bi_attention_head_portable(g, b, h, work, ob, H * D, wb);
    }
  }
  Py_END_ALLOW_THREADS;
  Py_RETURN_NONE;
}
#endif  // HF_BITGEMM_NO_PYTHON

// The two fused Linears as plain C++ calls (the Python bindings below and the encoder runtime, encoder.h, use them).
// Arguments as the bindings' (reference.w1a1_linear / w1a8_linear); scratch() of the calling thread holds the
// quantized input.
// The next binarized Linear's input quantizer, when a W1A1 Linear packs its output for it directly (Epilogue's
// pack_* fields): bits [M, ld bytes] and their count per row, both written by the call.
struct PackTarget {
  uint8_t* bits;
  int64_t ld;
  int64_t* pop;
  const float* shift;
  float s, thr;
  int mode;
};

// A W1A1 Linear on already packed input bits [M, kw words] (pop[m] set bits per row, `mode` the bits' meaning),
// to a float output or (pack non-null) straight into the next Linear's input bits. wnib: the weights' nibble_layout
// for the AVX2 table path, or null.
void run_w1a1_bits(const uint64_t* bits, const int64_t* pop, int64_t M, int64_t K, int mode, const uint64_t* w,
                   int64_t N, const float* alpha, const float* gamma, float scale, const float* bias, float* out,
                   int64_t ldo, int nthreads, const PackTarget* pack = nullptr, const uint8_t* wnib = nullptr) {
  const int64_t kw = bits_words(K);
  const int isa = g_isa;
  static thread_local std::vector<int64_t> sums;
  if (sums.size() < (size_t)(2 * M)) sums.resize((size_t)(2 * M));
  int64_t* add_m = sums.data();
  int64_t* xsum = add_m + M;
  const bool is_signed = mode == SIGNED || mode == SIGNED_GELU;
  // ±1 inputs: a·b = K − 2·popcount(a XOR b), Σq = 2·pop − K;  {0,1} inputs: a·b = 2·popcount(a AND b) − pop, Σq = pop
  for (int64_t m = 0; m < M; ++m) {
    add_m[m] = is_signed ? K : -pop[m];
    xsum[m] = is_signed ? 2 * pop[m] - K : pop[m];
  }
  Epilogue e{is_signed ? -2 : 2, add_m, nullptr, alpha, gamma, bias, nullptr, scale, xsum, out, ldo};
  const int64_t parts = (N + 63) / 64;
  static thread_local std::vector<int64_t> partial;
  if (pack) {
    if (partial.size() < (size_t)(M * parts)) partial.resize((size_t)(M * parts));
    std::memset(pack->bits, 0, (size_t)(M * pack->ld));
    std::fill(partial.begin(), partial.begin() + M * parts, 0);
    e.pack_bits = pack->bits;
    e.pack_ld = pack->ld;
    e.pack_pop = partial.data();
    e.pack_shift = pack->shift;
    e.pack_s = pack->s;
    e.pack_thr = pack->thr;
    e.pack_mode = pack->mode;
    e.pack_n = N;
  }
  if (is_signed)
    bits_gemm<0>(isa, M, N, bits, kw, w, e, nthreads, wnib);
  else
    bits_gemm<1>(isa, M, N, bits, kw, w, e, nthreads, wnib);
  if (pack)
    for (int64_t m = 0; m < M; ++m) {
      int64_t total = 0;
      for (int64_t c = 0; c < parts; ++c) total += partial[m * parts + c];
      pack->pop[m] = total;
    }
}

void run_w1a1(const float* x, int64_t M, int64_t K, int64_t ldx, const float* shift, float s, float thr, int mode,
              const uint64_t* w, int64_t N, const float* alpha, const float* gamma, float scale, const float* bias,
              float* out, int64_t ldo, int nthreads, const PackTarget* pack = nullptr, const uint8_t* wnib = nullptr) {
  const int64_t kw = bits_words(K);
  uint8_t* buf = scratch((size_t)(M * kw * 8 + M * 8));
  int64_t* pop = reinterpret_cast<int64_t*>(buf + M * kw * 8);
  pack_rows(g_isa, x, M, K, ldx, shift, s, thr, mode, buf, kw * 8, pop, nthreads);
  run_w1a1_bits(reinterpret_cast<const uint64_t*>(buf), pop, M, K, mode, w, N, alpha, gamma, scale, bias, out, ldo,
                nthreads, pack, wnib);
}

// One output of run_w1a8_shared: a W1 Linear's nib-layout weights (N rows), Σ_k B_nk, scales, bias and output.
struct W1A8Output {
  const uint64_t* w;
  int64_t N;
  const int32_t* wsum;
  const float *alpha, *gamma, *bias;
  float* out;
  int64_t ldo;
  const uint8_t* lut = nullptr;  // the lut6 index after the nib words (lut6_index), or null (then no AVX-512 tables)
  const uint64_t* amx = nullptr;  // the amx layout (avx512_amx), or null
};

// Several W1 × u8 Linears on one input x [M, K] with one input quantizer (Q, K and V of a layer whose three
// quantizers are the same): x is quantized once, and on the AVX2 lookup-table path each row's tables serve all of them.
void run_w1a8_shared(const float* x, int64_t M, int64_t K, int64_t ldx, const float* shift, float s, int qn, int qp,
                     bool dynamic, int nouts, const W1A8Output* outs, int nthreads, bool bytes) {
  const int z = -qn;  // u = q + z ∈ [0, qp − qn]
  const int64_t lu = (K + 63) / 64 * 64, steps = (K + 3) / 4;
  const int isa = g_isa;
  int64_t total_n = 0;
  for (int i = 0; i < nouts; ++i) total_n += outs[i].N;
  // u's rows padded to a multiple of 32 with zeros: the AMX GEMM reads whole 32-row blocks (and finishes the real rows)
  const int64_t Mp = (M + 31) / 32 * 32;
  uint8_t* buf = scratch((size_t)(Mp * lu + M * 12 + total_n * 4));
  uint8_t* u = buf;
  int64_t* qsum = reinterpret_cast<int64_t*>(buf + Mp * lu);
  float* scales = reinterpret_cast<float*>(buf + Mp * lu + M * 8);
  int32_t* add_n = reinterpret_cast<int32_t*>(buf + Mp * lu + M * 12);
  quantize_rows(isa, x, M, K, ldx, shift, s, qn, qp, z, dynamic, u, lu, qsum, scales, nthreads);
  std::memset(u + M * lu, 0, (size_t)((Mp - M) * lu));
  Epilogue e[4];
  for (int i = 0, off = 0; i < nouts; off += (int)outs[i].N, ++i) {
    for (int64_t n = 0; n < outs[i].N; ++n) add_n[off + n] = -z * outs[i].wsum[n];  // Σ_k (q + z)·b − z·Σ_k b = Σ_k q·b
    e[i] = Epilogue{1, nullptr, add_n + off, outs[i].alpha, outs[i].gamma, outs[i].bias, dynamic ? scales : nullptr, s,
                    qsum, outs[i].out, outs[i].ldo};
  }
#if defined(__x86_64__) || defined(_M_X64)
  bool tiled = isa == AVX512_AMX && kFeatures.amx && !bytes;  // AMX tiles need each output's amx layout
  for (int i = 0; i < nouts; ++i) tiled = tiled && outs[i].amx;
  if (tiled) {
    for (int i = 0; i < nouts; ++i) amx_gemm(M, outs[i].N, u, lu, K, outs[i].amx, e[i], nthreads);
    return;
  }
  bool indexed = true;  // the AVX-512 lookup tables need each output's lut6 index (the nib layout carries it)
  for (int i = 0; i < nouts; ++i) indexed = indexed && outs[i].lut;
  if (!bytes && (isa == AVX2 || (isa >= AVX512 && indexed)) && M >= kLutMinRows) {
    LutOperand ops[4];
    for (int i = 0; i < nouts; ++i) ops[i] = LutOperand{outs[i].w, outs[i].N, e[i], outs[i].lut};
    lut_w1a8(isa, M, u, lu, steps, K, z, nouts, ops, nthreads);
    return;
  }
#endif
  for (int i = 0; i < nouts; ++i) {
    if (bytes)
      nib_gemm<true>(isa, M, outs[i].N, u, lu, steps, outs[i].w, e[i], nthreads);
    else
      nib_gemm<false>(isa, M, outs[i].N, u, lu, steps, outs[i].w, e[i], nthreads);
  }
}

void run_w1a8(const float* x, int64_t M, int64_t K, int64_t ldx, const float* shift, float s, int qn, int qp,
              bool dynamic, const uint64_t* w, int64_t N, const int32_t* wsum, const float* alpha, const float* gamma,
              const float* bias, float* out, int64_t ldo, int nthreads, bool bytes, const uint8_t* lut = nullptr,
              const uint64_t* amx = nullptr) {
  const W1A8Output o{w, N, wsum, alpha, gamma, bias, out, ldo, lut, amx};
  run_w1a8_shared(x, M, K, ldx, shift, s, qn, qp, dynamic, 1, &o, nthreads, bytes);
}

#include "encoder.h"
#include "popcount_rate.h"
#include "quantized_probs.h"
#include "scaled_sign.h"
#include "dropout.h"

// Which instruction sets this CPU (and this build) runs; used by set_isa and the C-level test.
bool isa_supported(int isa) {
  switch (isa) {
    case AVX512_VPOPCNT: return kFeatures.avx512bw && kFeatures.vpopcntdq;
    case AVX512_AMX: return kFeatures.amx;
    case AVX512_VPOPCNT_EMULATED: return kFeatures.avx512bw;
    case AVX512: return kFeatures.avx512bw;
    case AVX2: return kFeatures.avx2;
    case NEON: return kFeatures.neon;
    default: return true;
  }
}

#ifndef HF_BITGEMM_NO_PYTHON
// ------------------------------------------------------------------------------------------------------------------
// Python bindings (pointers are passed as integers: tensor.data_ptr(); 0 = absent).

PyObject* py_w1a1_linear(PyObject*, PyObject* args) {
  unsigned long long x, shift, w, alpha, gamma, bias, out;
  long long M, K, ldx, N, ldo;
  float s, thr, scale;
  int mode, nthreads;
  if (!PyArg_ParseTuple(args, "KLLLKffiKLKKfKKLi", &x, &M, &K, &ldx, &shift, &s, &thr, &mode, &w, &N, &alpha, &gamma,
                        &scale, &bias, &out, &ldo, &nthreads))
    return nullptr;
  if (mode < SIGNED || mode > UNSIGNED_GT) {  // SIGNED_GELU and SIGNED_SCALED are the encoder runtime's own
    PyErr_Format(PyExc_ValueError, "w1a1_linear: mode must be 0, 1 or 2, got %d", mode);
    return nullptr;
  }
  Py_BEGIN_ALLOW_THREADS;
  run_w1a1(ptr<const float>(x), M, K, ldx, ptr<const float>(shift), s, thr, mode, ptr<const uint64_t>(w), N,
           ptr<const float>(alpha), ptr<const float>(gamma), scale, ptr<const float>(bias), ptr<float>(out), ldo,
           nthreads);
  Py_END_ALLOW_THREADS;
  Py_RETURN_NONE;
}

PyObject* py_w1a8_linear(PyObject*, PyObject* args) {
  unsigned long long x, shift, w, wsum, alpha, gamma, bias, out;
  long long M, K, ldx, N, ldo;
  float s;
  int qn, qp, dynamic, nthreads, bytes = 0;
  if (!PyArg_ParseTuple(args, "KLLLKfiipKLKKKKKLi|p", &x, &M, &K, &ldx, &shift, &s, &qn, &qp, &dynamic, &w, &N, &wsum,
                        &alpha, &gamma, &bias, &out, &ldo, &nthreads, &bytes))
    return nullptr;
  if (qn > 0 || qp < 1 || qp - qn > 255 || (dynamic && qn != -qp) || (bytes && qp - qn > 127)) {
    PyErr_Format(PyExc_ValueError, "w1a8_linear: levels [%d, %d] do not fit in %d bits%s", qn, qp, bytes ? 7 : 8,
                 dynamic ? " (dynamic levels must be symmetric)" : "");
    return nullptr;
  }
  Py_BEGIN_ALLOW_THREADS;
  // (the "nib" weights Python passes are layout_words("nib") long: the lut6 index follows the nib words)
  const uint64_t* nib = ptr<const uint64_t>(w);
  const uint8_t* lut = bytes ? nullptr : reinterpret_cast<const uint8_t*>(nib + lut6_offset_words(N, K));
  run_w1a8(ptr<const float>(x), M, K, ldx, ptr<const float>(shift), s, qn, qp, dynamic, nib, N,
           ptr<const int32_t>(wsum), ptr<const float>(alpha), ptr<const float>(gamma), ptr<const float>(bias),
           ptr<float>(out), ldo, nthreads, bytes, lut);
  Py_END_ALLOW_THREADS;
  Py_RETURN_NONE;
}

// Training kernels of the attention probabilities' quantizer (quantized_probs.h); kept = 0: no dropout.
PyObject* py_quantized_probs_forward(PyObject*, PyObject* args) {
  unsigned long long probs, kept, codes, weights;
  long long n;
  float alpha, q_p, keep_scale;
  int nthreads;
  if (!PyArg_ParseTuple(args, "KKLfffKKi", &probs, &kept, &n, &alpha, &q_p, &keep_scale, &codes, &weights, &nthreads))
    return nullptr;
  Py_BEGIN_ALLOW_THREADS;
  quantized_probs_forward(ptr<const float>(probs), ptr<const uint8_t>(kept), n, alpha, q_p, keep_scale,
                          ptr<uint8_t>(codes), ptr<float>(weights), nthreads);
  Py_END_ALLOW_THREADS;
  Py_RETURN_NONE;
}

PyObject* py_quantized_probs_weights(PyObject*, PyObject* args) {
  unsigned long long codes, weights;
  long long n;
  float alpha, keep_scale;
  int with_scale, nthreads;
  if (!PyArg_ParseTuple(args, "KLffpKi", &codes, &n, &alpha, &keep_scale, &with_scale, &weights, &nthreads))
    return nullptr;
  Py_BEGIN_ALLOW_THREADS;
  quantized_probs_weights(ptr<const uint8_t>(codes), n, alpha, keep_scale, with_scale, ptr<float>(weights), nthreads);
  Py_END_ALLOW_THREADS;
  Py_RETURN_NONE;
}

PyObject* py_quantized_probs_backward(PyObject*, PyObject* args) {
  unsigned long long grad, grad2, probs, kept, out;
  long long n;
  float alpha, q_p, keep_scale;
  int nthreads;
  if (!PyArg_ParseTuple(args, "KKKKLfffKi", &grad, &grad2, &probs, &kept, &n, &alpha, &q_p, &keep_scale, &out,
                        &nthreads))
    return nullptr;
  double step_grad;
  Py_BEGIN_ALLOW_THREADS;
  step_grad = quantized_probs_backward(ptr<const float>(grad), ptr<const float>(grad2), ptr<const float>(probs),
                                       ptr<const uint8_t>(kept), n, alpha, q_p, keep_scale, ptr<float>(out), nthreads);
  Py_END_ALLOW_THREADS;
  return PyFloat_FromDouble(step_grad);
}

// Training kernels of BiT's 1-bit elastic activation quantizer (scaled_sign.h); sizes and strides as 4-D views.
PyObject* py_scaled_sign_forward(PyObject*, PyObject* args) {
  unsigned long long x, shift, out, codes;
  Strided4 v;
  float alpha;
  int nthreads;
  if (!PyArg_ParseTuple(args, "KK(LLLL)(LLLL)(LLLL)fKKi", &x, &shift, &v.size[0], &v.size[1], &v.size[2], &v.size[3],
                        &v.x[0], &v.x[1], &v.x[2], &v.x[3], &v.shift[0], &v.shift[1], &v.shift[2], &v.shift[3], &alpha,
                        &out, &codes, &nthreads))
    return nullptr;
  Py_BEGIN_ALLOW_THREADS;
  scaled_sign_forward(ptr<const float>(x), ptr<const float>(shift), v, alpha, ptr<float>(out), ptr<uint8_t>(codes),
                      nthreads);
  Py_END_ALLOW_THREADS;
  Py_RETURN_NONE;
}

PyObject* py_scaled_sign_levels(PyObject*, PyObject* args) {
  unsigned long long codes, out;
  long long n;
  float alpha;
  int nthreads;
  if (!PyArg_ParseTuple(args, "KLfKi", &codes, &n, &alpha, &out, &nthreads)) return nullptr;
  Py_BEGIN_ALLOW_THREADS;
  scaled_sign_levels(ptr<const uint8_t>(codes), n, alpha, ptr<float>(out), nthreads);
  Py_END_ALLOW_THREADS;
  Py_RETURN_NONE;
}

PyObject* py_scaled_sign_backward(PyObject*, PyObject* args) {
  unsigned long long grad, codes, out;
  long long n;
  int nthreads;
  if (!PyArg_ParseTuple(args, "KKLKi", &grad, &codes, &n, &out, &nthreads)) return nullptr;
  double sign_sum;
  Py_BEGIN_ALLOW_THREADS;
  sign_sum = scaled_sign_backward(ptr<const float>(grad), ptr<const uint8_t>(codes), n, ptr<float>(out), nthreads);
  Py_END_ALLOW_THREADS;
  return PyFloat_FromDouble(sign_sum);
}

// dropout_kept(key, n, threshold, kept (uint8 / bool, n bytes), threads): dropout.h.
PyObject* py_dropout_kept(PyObject*, PyObject* args) {
  unsigned long long key, kept;
  long long n;
  unsigned int threshold;
  int nthreads;
  if (!PyArg_ParseTuple(args, "KLIKi", &key, &n, &threshold, &kept, &nthreads)) return nullptr;
  Py_BEGIN_ALLOW_THREADS;
  dropout_kept((uint64_t)key, n, (uint32_t)threshold, ptr<uint8_t>(kept), nthreads);
  Py_END_ALLOW_THREADS;
  Py_RETURN_NONE;
}

// dropout_apply(x (float32), kept (uint8 / bool), s (1/(1 − p)), backward (0 / 1), out (float32), n, threads):
// dropout.h.
PyObject* py_dropout_apply(PyObject*, PyObject* args) {
  unsigned long long x, kept, out;
  double s;
  int backward, nthreads;
  long long n;
  if (!PyArg_ParseTuple(args, "KKdpKLi", &x, &kept, &s, &backward, &out, &n, &nthreads)) return nullptr;
  Py_BEGIN_ALLOW_THREADS;
  dropout_apply(ptr<float>(x), ptr<uint8_t>(kept), (float)s, backward != 0, ptr<float>(out), n, nthreads);
  Py_END_ALLOW_THREADS;
  Py_RETURN_NONE;
}

// Kernel layouts (see repack_bits / repack_nib): sizes in uint64 words, and the repacking itself.
PyObject* py_layout_words(PyObject*, PyObject* args) {
  const char* kind;
  long long N, K;
  if (!PyArg_ParseTuple(args, "sLL", &kind, &N, &K)) return nullptr;
  if (std::strcmp(kind, "bits") == 0) return PyLong_FromLongLong((N + kBitsGroup - 1) / kBitsGroup * bits_words(K) * kBitsGroup);
  if (std::strcmp(kind, "nib") == 0) return PyLong_FromLongLong(nib_layout_words(N, K));
  PyErr_Format(PyExc_ValueError, "unknown kernel layout %s (bits, nib)", kind);
  return nullptr;
}

// The AVX2 table GEMM's weights made once (nibble_layout), for the encoder runtime's plan: nibble_layout(bits layout,
// N, K, out (32-byte aligned, nibble_layout_bytes(N, K) bytes), threads); nibble_layout_bytes(N, K). x86-64 only.
PyObject* py_nibble_layout_bytes(PyObject*, PyObject* args) {
  long long N, K;
  if (!PyArg_ParseTuple(args, "LL", &N, &K)) return nullptr;
#if defined(__x86_64__) || defined(_M_X64)
  return PyLong_FromLongLong(nibble_layout_bytes(N, K));
#else
  PyErr_SetString(PyExc_ValueError, "the nibble layout is for the AVX2 path of x86-64 only");
  return nullptr;
#endif
}

PyObject* py_nibble_layout(PyObject*, PyObject* args) {
  unsigned long long w, out;
  long long N, K;
  int nthreads;
  if (!PyArg_ParseTuple(args, "KLLKi", &w, &N, &K, &out, &nthreads)) return nullptr;
#if defined(__x86_64__) || defined(_M_X64)
  if (out % 32 != 0) {
    PyErr_SetString(PyExc_ValueError, "nibble layout: the output buffer must be 32-byte aligned");
    return nullptr;
  }
  if (!kFeatures.avx2) {
    PyErr_SetString(PyExc_ValueError, "nibble layout: this CPU has no AVX2");
    return nullptr;
  }
  Py_BEGIN_ALLOW_THREADS;
  nibble_layout(ptr<const uint64_t>(w), N, K, ptr<uint8_t>(out), nthreads);
  Py_END_ALLOW_THREADS;
  Py_RETURN_NONE;
#else
  PyErr_SetString(PyExc_ValueError, "the nibble layout is for the AVX2 path of x86-64 only");
  return nullptr;
#endif
}

// The AMX GEMMs' weights made once (amx_layout), for the encoder runtime's plan: amx_layout(packed checkpoint bits
// [N, ceil(K/8)], N, K, out (64-byte aligned, amx_layout_words(N, K) int64 words), threads). x86-64 only.
PyObject* py_amx_layout_words(PyObject*, PyObject* args) {
  long long N, K;
  if (!PyArg_ParseTuple(args, "LL", &N, &K)) return nullptr;
#if defined(__x86_64__) || defined(_M_X64)
  return PyLong_FromLongLong(amx_layout_words(N, K));
#else
  PyErr_SetString(PyExc_ValueError, "the amx layout is for the avx512_amx path of x86-64 only");
  return nullptr;
#endif
}

PyObject* py_amx_layout(PyObject*, PyObject* args) {
  unsigned long long w, out;
  long long N, K;
  int nthreads;
  if (!PyArg_ParseTuple(args, "KLLKi", &w, &N, &K, &out, &nthreads)) return nullptr;
#if defined(__x86_64__) || defined(_M_X64)
  if (out % 64 != 0) {
    PyErr_SetString(PyExc_ValueError, "amx layout: the output buffer must be 64-byte aligned");
    return nullptr;
  }
  Py_BEGIN_ALLOW_THREADS;
  amx_layout(ptr<const uint8_t>(w), N, K, ptr<uint64_t>(out), nthreads);
  Py_END_ALLOW_THREADS;
  Py_RETURN_NONE;
#else
  PyErr_SetString(PyExc_ValueError, "the amx layout is for the avx512_amx path of x86-64 only");
  return nullptr;
#endif
}

PyObject* py_repack(PyObject*, PyObject* args) {
  const char* kind;
  unsigned long long w, out;
  long long N, K;
  if (!PyArg_ParseTuple(args, "sKLLK", &kind, &w, &N, &K, &out)) return nullptr;
  if (std::strcmp(kind, "bits") == 0)
    repack_bits(ptr<const uint8_t>(w), N, K, ptr<uint64_t>(out));
  else if (std::strcmp(kind, "nib") == 0)
    repack_nib_layout(ptr<const uint8_t>(w), N, K, ptr<uint64_t>(out));
  else {
    PyErr_Format(PyExc_ValueError, "unknown kernel layout %s (bits, nib)", kind);
    return nullptr;
  }
  Py_RETURN_NONE;
}

// Σ_k b[n,k] (b = ±1) of each weight row: 2·popcount(row) − K.
PyObject* py_row_sums(PyObject*, PyObject* args) {
  unsigned long long w, out;
  long long N, K;
  if (!PyArg_ParseTuple(args, "KLLK", &w, &N, &K, &out)) return nullptr;
  const int64_t ld = (K + 7) / 8;
  const uint8_t* b = ptr<const uint8_t>(w);
  int32_t* o = ptr<int32_t>(out);
  for (int64_t n = 0; n < N; ++n) {
    int64_t c = 0;
    for (int64_t i = 0; i < ld; i += 8) c += __builtin_popcountll(load_u64(b + n * ld + i, ld - i));
    o[n] = (int32_t)(2 * c - K);
  }
  Py_RETURN_NONE;
}

// spread_check(): spread_team's collision path run on purpose, for the tests: in a 2-thread region the worker calls
// spread_team with the CPU it is on. Returns (CPU before, CPU after, whether its affinity mask afterwards equals the
// one before), or None where spread_team does nothing (not Linux, no OpenMP, one CPU in the mask).
PyObject* py_spread_check(PyObject*, PyObject*) {
#if defined(__linux__) && defined(_OPENMP)
  int before = -1, after = -1, restored = 0, ran = 0;
  Py_BEGIN_ALLOW_THREADS;
#pragma omp parallel num_threads(2)
  if (omp_get_thread_num() == 1) {
    cpu_set_t mask, now;
    if (sched_getaffinity(0, sizeof mask, &mask) == 0 && CPU_COUNT(&mask) > 1) {
      ran = 1;
      before = sched_getcpu();
      spread_team(before);
      after = sched_getcpu();
      restored = sched_getaffinity(0, sizeof now, &now) == 0 && CPU_EQUAL(&mask, &now);
    }
  }
  Py_END_ALLOW_THREADS;
  if (ran) return Py_BuildValue("(iiO)", before, after, restored ? Py_True : Py_False);
#endif
  Py_RETURN_NONE;
}

PyObject* py_cpu_features(PyObject*, PyObject*) {
  // amx_int8: AMX-TILE + AMX-INT8 usable by this process (the CPU has them, the OS enabled and permitted the tiles)
  return Py_BuildValue("{s:O,s:O,s:O,s:O,s:O,s:O,s:O,s:O}", "neon", kFeatures.neon ? Py_True : Py_False, "avx2", kFeatures.avx2 ? Py_True : Py_False, "avx512bw",
                       kFeatures.avx512bw ? Py_True : Py_False, "avx512vl", kFeatures.avx512vl ? Py_True : Py_False,
                       "avx512_vpopcntdq", kFeatures.vpopcntdq ? Py_True : Py_False, "avx512_vnni",
                       kFeatures.vnni ? Py_True : Py_False, "avx512_bf16", kFeatures.bf16 ? Py_True : Py_False,
                       "amx_int8", kFeatures.amx ? Py_True : Py_False);
}

PyObject* py_supported_isas(PyObject*, PyObject*) {
  PyObject* list = PyList_New(0);
  for (int i = 0; i < kIsaCount; ++i)
    if ((i < kListedIsas || i == NEON || i == AVX512_AMX) && isa_supported(i)) {
      PyObject* s = PyUnicode_FromString(kIsaNames[i]);
      PyList_Append(list, s);
      Py_DECREF(s);
    }
  return list;
}

PyObject* py_get_isa(PyObject*, PyObject*) { return PyUnicode_FromString(kIsaNames[g_isa]); }

PyObject* py_set_isa(PyObject*, PyObject* args) {
  const char* name;
  if (!PyArg_ParseTuple(args, "s", &name)) return nullptr;
  for (int i = 0; i < kIsaCount; ++i)
    if (std::strcmp(name, kIsaNames[i]) == 0) {
      if (!isa_supported(i)) {
        PyErr_Format(PyExc_ValueError, "instruction set %s is not supported by this CPU", name);
        return nullptr;
      }
      g_isa = i;
      Py_RETURN_NONE;
    }
  PyErr_Format(PyExc_ValueError, "unknown instruction set %s (portable, avx2, avx512, avx512_vpopcnt, avx512_amx, avx512_vpopcnt_emulated, neon)", name);
  return nullptr;
}

// How tensor_state reads one tensor type's `_version` and `data_ptr()`: straight through the C functions behind
// them (the getset descriptor's getter, the METH_NOARGS method's function), found once per type, instead of two
// attribute lookups per tensor — the same functions that `tensor._version` / `tensor.data_ptr()` call (data_ptr's
// own __torch_function__ handling included), for types whose attribute lookup is the generic one. Types are kept
// (with a reference) in a small table; a type that does not resolve that way (a Python subclass overriding either
// name or __getattribute__) is read through the attributes, as before.
struct TensorAccess {
  PyTypeObject* type = nullptr;
  getter version = nullptr;
  void* version_closure = nullptr;
  PyCFunction data_ptr = nullptr;  // nullptr: read through the attributes
};
constexpr int kAccessTypes = 8;
TensorAccess g_access[kAccessTypes];
int g_access_count = 0;

const TensorAccess* tensor_access(PyObject* tensor, PyObject* version_name, PyObject* data_ptr_name) {
  PyTypeObject* type = Py_TYPE(tensor);
  for (int i = 0; i < g_access_count; ++i)
    if (g_access[i].type == type) return &g_access[i];
  TensorAccess access;
  access.type = type;
  if (type->tp_getattro == PyObject_GenericGetAttr) {
    PyObject* v = PyObject_GetAttr(reinterpret_cast<PyObject*>(type), version_name);  // the descriptors themselves
    PyObject* d = PyObject_GetAttr(reinterpret_cast<PyObject*>(type), data_ptr_name);
    if (v && d && Py_IS_TYPE(v, &PyGetSetDescr_Type) && Py_IS_TYPE(d, &PyMethodDescr_Type)) {
      PyGetSetDef* get = reinterpret_cast<PyGetSetDescrObject*>(v)->d_getset;
      PyMethodDef* method = reinterpret_cast<PyMethodDescrObject*>(d)->d_method;
      if (get->get && (method->ml_flags & ~METH_COEXIST) == METH_NOARGS) {
        access.version = get->get;
        access.version_closure = get->closure;
        access.data_ptr = method->ml_meth;
      }
    }
    Py_XDECREF(v);
    Py_XDECREF(d);
    PyErr_Clear();  // no fast path for this type: the attributes are read instead
  }
  if (g_access_count == kAccessTypes) {
    static TensorAccess slow;  // table full: read every other type through the attributes
    return &slow;
  }
  Py_INCREF(type);  // held for the life of the process: the address stays this type's
  g_access[g_access_count] = access;
  return &g_access[g_access_count++];
}

// The state of each tensor that the native runtime's plan check compares: its version counter (`_version`: bumped by
// in-place edits such as load_state_dict's copy_) and its data pointer (`data_ptr()`: changed by `param.data = other`,
// which keeps the version counter); 0 for a tensor without storage, whose `data_ptr()` raises RuntimeError (a sparse
// buffer: the plan never reads one by address). Returns false with a Python error set.
bool tensor_state(PyObject* tensor, int64_t out[2]) {
  static PyObject* version_name = PyUnicode_InternFromString("_version");
  static PyObject* data_ptr_name = PyUnicode_InternFromString("data_ptr");
  const TensorAccess* access = tensor_access(tensor, version_name, data_ptr_name);
  for (int i = 0; i < 2; ++i) {
    PyObject* v;
    if (access->data_ptr)
      v = i == 0 ? access->version(tensor, access->version_closure) : access->data_ptr(tensor, nullptr);
    else
      v = i == 0 ? PyObject_GetAttr(tensor, version_name) : PyObject_CallMethodNoArgs(tensor, data_ptr_name);
    if (!v && i == 1 && PyErr_ExceptionMatches(PyExc_RuntimeError)) {
      PyErr_Clear();
      out[i] = 0;
      continue;
    }
    if (!v) return false;
    out[i] = (int64_t)PyLong_AsUnsignedLongLongMask(v);  // the bits as they are (a tagged pointer too)
    Py_DECREF(v);
    if (out[i] == -1 && PyErr_Occurred()) return false;
  }
  return true;
}

// The addresses of a tensor's TensorImpl (`_cdata`) and StorageImpl (`untyped_storage()._cdata`), 0 where there is
// none: read once by tensor_states, used by unchanged only as prefetch hints (a stale address is harmless).
void tensor_addresses(PyObject* tensor, int64_t out[2]) {
  static PyObject* cdata_name = PyUnicode_InternFromString("_cdata");
  static PyObject* storage_name = PyUnicode_InternFromString("untyped_storage");
  out[0] = out[1] = 0;
  PyObject* storage = PyObject_CallMethodNoArgs(tensor, storage_name);
  PyObject* owners[2] = {tensor, storage};
  for (int i = 0; i < 2; ++i) {
    PyObject* v = owners[i] ? PyObject_GetAttr(owners[i], cdata_name) : nullptr;
    if (v) out[i] = (int64_t)PyLong_AsUnsignedLongLongMask(v);
    Py_XDECREF(v);
    PyErr_Clear();  // hints only: a tensor without storage (or any error here) leaves 0
  }
  Py_XDECREF(storage);
}

constexpr int kStateWords = 4;  // per tensor in tensor_states' bytes: version, data pointer, impl and storage addresses

// tensor_states(tensors) → bytes: int64 (version, data pointer) of each tensor (tensor_state), the snapshot that
// unchanged compares with, each followed by its TensorImpl and StorageImpl addresses (tensor_addresses), the
// prefetch hints of unchanged.
PyObject* py_tensor_states(PyObject*, PyObject* args) {
  PyObject* tensors;
  if (!PyArg_ParseTuple(args, "O!", &PyList_Type, &tensors)) return nullptr;
  const Py_ssize_t t = PyList_GET_SIZE(tensors);
  std::vector<int64_t> state(kStateWords * t);
  for (Py_ssize_t j = 0; j < t; ++j) {
    if (!tensor_state(PyList_GET_ITEM(tensors, j), state.data() + kStateWords * j)) return nullptr;
    tensor_addresses(PyList_GET_ITEM(tensors, j), state.data() + kStateWords * j + 2);
  }
  return PyBytes_FromStringAndSize(reinterpret_cast<const char*>(state.data()), (Py_ssize_t)(state.size() * 8));
}

// Prefetch `lines` cache lines from `address` (a hint: never faults, whatever the address).
inline void prefetch_lines(const void* address, int lines) {
  for (int l = 0; l < lines; ++l) __builtin_prefetch(static_cast<const char*>(address) + 64 * l);
}

// Prefetch what tensor_state reads of tensors[j]: its object, and its TensorImpl and StorageImpl at the addresses
// tensor_states recorded after its (version, data pointer) in `saved`.
inline void prefetch_tensor(PyObject* tensors, const char* saved, Py_ssize_t j) {
  int64_t hints[2];
  std::memcpy(hints, saved + 8 * kStateWords * j + 16, 16);
  prefetch_lines(PyList_GET_ITEM(tensors, j), 2);
  if (hints[0]) prefetch_lines(reinterpret_cast<const void*>(hints[0]), 4);
  if (hints[1]) prefetch_lines(reinterpret_cast<const void*>(hints[1]), 2);
}

// unchanged(tables, names, values, tensors, states) → bool: the native runtime's per-forward plan check
// (runtime.EncoderRuntime._still_valid) in one C loop: tables[i].get(names[i]) is values[i] for every i (no module,
// parameter or buffer replaced), and every tensors[j]'s version and data pointer equal those in `states` (the bytes
// tensor_states returned: none changed in place, none given other data).
//
// Right after a forward the objects it reads are out of the caches, and each entry's reads depend on one another
// (object → TensorImpl → StorageImpl), so the loop prefetches the objects, dicts, TensorImpls and StorageImpls of
// the entries kAhead further on: the misses of many entries overlap instead of following one another.
PyObject* py_unchanged(PyObject*, PyObject* args) {
  constexpr Py_ssize_t kAhead = 12;
  PyObject *tables, *names, *values, *tensors;
  Py_buffer states;
  if (!PyArg_ParseTuple(args, "O!O!O!O!y*", &PyList_Type, &tables, &PyList_Type, &names, &PyList_Type, &values,
                        &PyList_Type, &tensors, &states))
    return nullptr;
  struct Release {
    Py_buffer* b;
    ~Release() { PyBuffer_Release(b); }
  } release{&states};
  const Py_ssize_t n = PyList_GET_SIZE(tables), t = PyList_GET_SIZE(tensors);
  if (PyList_GET_SIZE(names) != n || PyList_GET_SIZE(values) != n || states.len != t * 8 * kStateWords) {
    PyErr_SetString(PyExc_ValueError, "unchanged: tables, names and values (tensors and states) differ in length");
    return nullptr;
  }
  const char* saved = static_cast<const char*>(states.buf);
  for (Py_ssize_t j = 0; j < std::min(t, kAhead); ++j) prefetch_tensor(tensors, saved, j);
  for (Py_ssize_t i = 0; i < std::min(n, 2 * kAhead); ++i) prefetch_lines(PyList_GET_ITEM(tables, i), 1);
  for (Py_ssize_t i = 0; i < n; ++i) {
    if (i + 2 * kAhead < n) prefetch_lines(PyList_GET_ITEM(tables, i + 2 * kAhead), 1);
    if (i + kAhead < n) {
      PyObject* ahead = PyList_GET_ITEM(tables, i + kAhead);  // its line was prefetched kAhead entries ago
      if (PyDict_Check(ahead)) prefetch_lines(reinterpret_cast<PyDictObject*>(ahead)->ma_keys, 2);
    }
    PyObject* table = PyList_GET_ITEM(tables, i);
    if (!PyDict_Check(table)) {
      PyErr_SetString(PyExc_TypeError, "unchanged: tables must be dicts");
      return nullptr;
    }
    PyObject* now = PyDict_GetItemWithError(table, PyList_GET_ITEM(names, i));  // borrowed
    if (now != PyList_GET_ITEM(values, i)) {
      if (PyErr_Occurred()) return nullptr;
      Py_RETURN_FALSE;
    }
    // the tensors' objects, TensorImpls and StorageImpls, while the dicts are read
    if (i < t) prefetch_tensor(tensors, saved, i);
  }
  for (Py_ssize_t j = 0; j < t; ++j) {
    if (j + kAhead < t) prefetch_tensor(tensors, saved, j + kAhead);
    int64_t now[2], then[2];
    if (!tensor_state(PyList_GET_ITEM(tensors, j), now)) return nullptr;
    std::memcpy(then, saved + 8 * kStateWords * j, 16);
    if (now[0] != then[0] || now[1] != then[1]) Py_RETURN_FALSE;
  }
  Py_RETURN_TRUE;
}

PyMethodDef kMethods[] = {
    {"unchanged", py_unchanged, METH_VARARGS,
     "The native runtime's plan check: entries, tensor versions and data pointers unchanged."},
    {"spread_check", py_spread_check, METH_NOARGS, "spread_team's collision path on a worker, for the tests."},
    {"tensor_states", py_tensor_states, METH_VARARGS, "int64 (version, data pointer) of each tensor, as bytes."},
    {"w1a1_linear", py_w1a1_linear, METH_VARARGS, "Fused input binarization + XNOR/AND-popcount GEMM + epilogue."},
    {"w1a8_linear", py_w1a8_linear, METH_VARARGS, "Fused input quantization to u8 + W1×u8 GEMM + epilogue."},
    {"row_sums", py_row_sums, METH_VARARGS, "Σ_k b[n,k] of ±1 weight rows from their bits."},
    {"bi_attention", py_bi_attention, METH_VARARGS, "Bitwise Bi-Attention with 1-bit Q, K, V."},
    {"encoder_forward", py_encoder_forward, METH_VARARGS, "Every layer of a packed binarized encoder (encoder.h)."},
    {"encoder_work_floats", py_encoder_work_floats, METH_VARARGS, "Work space of encoder_forward, in floats."},
    {"team_awake", py_team_awake, METH_NOARGS,
     "False while the forward is cold (the wake-ahead asked its helper, no native region has taken the team since)."},
    {"team_release", py_team_release, METH_NOARGS,
     "Ends a cold forward (the wake-ahead's helper stops spinning): the native encoder does not follow."},
    {"wake_requests", py_wake_requests, METH_NOARGS,
     "How many times the wake-ahead has asked its helper in this process (-1: compiled out); for the tests."},
    {"omp_thread_count", py_omp_thread_count, METH_VARARGS,
     "Set the calling thread's OpenMP thread count; returns the previous one."},
    {"embeddings_sum", py_embeddings_sum, METH_VARARGS, "The embeddings' sum before their LayerNorm (encoder.h)."},
    {"dense_rows", py_dense_rows, METH_VARARGS, "A small float dense layer for a few rows (BertPooler; encoder.h)."},
    {"encoder_layout", py_encoder_layout, METH_NOARGS, "Word counts and offsets of the encoder plan layout."},
    {"quantized_probs_forward", py_quantized_probs_forward, METH_VARARGS, "Attention probabilities' quantizer + dropout, training forward."},
    {"quantized_probs_weights", py_quantized_probs_weights, METH_VARARGS, "Dropped-out quantized probabilities from their levels."},
    {"quantized_probs_backward", py_quantized_probs_backward, METH_VARARGS, "Gradients of the probabilities' quantizer + dropout."},
    {"scaled_sign_forward", py_scaled_sign_forward, METH_VARARGS, "BiT's 1-bit elastic quantizer, training forward."},
    {"scaled_sign_levels", py_scaled_sign_levels, METH_VARARGS, "BiT's 1-bit x̂ = ±α from its codes."},
    {"scaled_sign_backward", py_scaled_sign_backward, METH_VARARGS, "Gradients of BiT's 1-bit elastic quantizer."},
    {"dropout_kept", py_dropout_kept, METH_VARARGS, "Dropout's kept mask from Philox4x32-10 (dropout.h)."},
    {"dropout_apply", py_dropout_apply, METH_VARARGS, "Dropout applied with a kept mask, one pass (dropout.h)."},
    {"popcount_rate", py_popcount_rate, METH_VARARGS, "XOR+popcount rate of this machine, G bit ops/s."},
    {"layout_words", py_layout_words, METH_VARARGS, "Size in uint64 words of a kernel layout (bits, nib)."},
    {"repack", py_repack, METH_VARARGS, "Checkpoint layout → kernel layout (bits, nib)."},
    {"nibble_layout", py_nibble_layout, METH_VARARGS, "The AVX2 table GEMM's weights from the bits layout, made once."},
    {"amx_layout_words", py_amx_layout_words, METH_VARARGS, "int64 words of the AMX GEMMs' weight layout."},
    {"amx_layout", py_amx_layout, METH_VARARGS, "The AMX GEMMs' weights from the checkpoint bits, made once."},
    {"nibble_layout_bytes", py_nibble_layout_bytes, METH_VARARGS, "Size in bytes of nibble_layout's output."},
    {"cpu_features", py_cpu_features, METH_NOARGS, "CPU features the kernels use."},
    {"supported_isas", py_supported_isas, METH_NOARGS, "Instruction sets this CPU runs, slowest first."},
    {"get_isa", py_get_isa, METH_NOARGS, "Instruction set in use."},
    {"set_isa", py_set_isa, METH_VARARGS, "Use another supported instruction set."},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef kModule = {PyModuleDef_HEAD_INIT, "_bitgemm", "hf_binary_bert bitwise CPU kernels", -1, kMethods};

#endif  // HF_BITGEMM_NO_PYTHON

}  // namespace

#ifndef HF_BITGEMM_NO_PYTHON
PyMODINIT_FUNC PyInit__bitgemm(void) { return PyModule_Create(&kModule); }
#endif
