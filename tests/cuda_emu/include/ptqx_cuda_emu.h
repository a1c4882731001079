// A CPU emulation of the parts of the CUDA execution model that ptqx's kernels use, so
// that CI (no GPU) can *run* the kernel bodies of csrc/cuda/*.cu and compare them with
// the CPU kernels, instead of only compiling them.
//
// Model: a launch runs its blocks one after another; a block's blockDim.x*y*z threads
// are fibers (ucontext) on the calling OS thread, run in a random order until each
// reaches a barrier: __syncthreads releases them when every live thread of the block has arrived,
// a warp collective when every live lane of the warp has. __shared__ variables become
// function-local statics (one block at a time uses them); `extern __shared__` arrays are
// rewritten by translate.py into a buffer refilled with 0xff bytes (NaN as float/double)
// before every block, so reading it before writing it shows up in the results.
// Warp collectives (__shfl_*_sync, __any_sync) exchange values through per-warp slots
// between two warp barriers. (OS threads per CUDA thread were tried first: thread
// creation and futex wake-ups made one small test take over two minutes.)
//
// What it checks beyond the arithmetic: launch configurations against the device limits
// (threads per block, grid dimensions: x < 2^31, y and z <= 65535, 48 KiB of dynamic shared
// memory without an opt-in; ConfigOnly checks the configurations of huge launches without
// running them), shuffles that read a lane which has exited or does not exist, and, because
// the tests build with AddressSanitizer, every out-of-bounds access of a kernel to
// global memory. A missing __syncthreads shows as wrong results: between two barriers
// the threads run one after another in a fresh random order, so a reader runs before
// its writer (read-after-write) or after the next overwrite (write-after-read) in some
// rounds; test_emu_hazards.cpp pins both. What it cannot check: timing, coalescing, bank
// conflicts, and races inside a stretch of code between barriers that need two threads
// interleaved instruction by instruction (fibers switch only at barriers and warp
// collectives), e.g. an unguarded read-modify-write of one shared word by two threads.
#pragma once

#include <math.h>
#include <ucontext.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#endif

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <functional>
#include <type_traits>
#include <vector>

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct uint3 {
  unsigned x = 0, y = 0, z = 0;
};

enum cudaError_t : int {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorInvalidConfiguration = 9,
};
struct CUstream_st;
using cudaStream_t = CUstream_st*;

namespace ptqx_emu {

inline constexpr int kWarp = 32;
inline constexpr unsigned kMaxThreadsPerBlock = 1024;
inline constexpr size_t kMaxDynamicShared = 48 * 1024;

// Errors seen by the emulator: launch-configuration errors are returned by
// cudaGetLastError like CUDA does; kernel faults (bad shuffles) are counted and printed,
// and the tests fail on any (faults()).
inline cudaError_t g_last_error = cudaSuccess;
inline int g_faults = 0;  // one OS thread runs every fiber: no atomics needed
inline int faults() { return g_faults; }
inline void fault(const char* what) {
  if (g_faults++ < 20) std::fprintf(stderr, "cuda_emu fault: %s\n", what);
}

enum class FiberState { Ready, AtBlockBarrier, AtWarpBarrier, Done };

struct Fiber {
  ucontext_t ctx;
  std::unique_ptr<char[]> stack;
  FiberState state = FiberState::Ready;
  uint3 tid;
  int warp = 0, lane = 0;
  void* asan_fake_stack = nullptr;
};

inline constexpr size_t kFiberStack = 256 * 1024;

struct Warp {
  std::array<uint64_t, kWarp> slot{};
  std::array<bool, kWarp> alive{};
  int lanes = 0;  // threads of the block in this warp
};

struct Block {
  std::vector<Fiber> fibers;
  std::vector<Warp> warps;
  ucontext_t scheduler;
  const void* sched_stack_bottom = nullptr;
  size_t sched_stack_size = 0;
  void* sched_fake_stack = nullptr;
  const std::function<void()>* body = nullptr;
};

inline dim3 g_grid_dim, g_block_dim;
inline void* g_dynamic_shared = nullptr;
inline uint3 t_thread, t_block;
inline Block* t_blk = nullptr;
inline Fiber* t_fiber = nullptr;
inline int t_warp = 0, t_lane = 0;

template <typename T>
T* dynamic_shared() {
  return static_cast<T*>(g_dynamic_shared);
}

inline dim3 to_dim3(dim3 d) { return d; }
template <typename I, typename = std::enable_if_t<std::is_integral_v<I>>>
dim3 to_dim3(I n) {
  if (n < 0 || static_cast<unsigned long long>(n) > 0xffffffffull) return dim3(0);
  return dim3(static_cast<unsigned>(n));
}

struct Config {
  dim3 grid, block;
  size_t shared = 0;
  template <typename G, typename B>
  Config(G g, B b, size_t shared_bytes = 0, cudaStream_t = nullptr)
      : grid(to_dim3(g)), block(to_dim3(b)), shared(shared_bytes) {}
};

// AddressSanitizer must be told about every stack switch, or it reports false errors
// on the fibers' stacks. (It still prints one generic warning about makecontext per
// process; with these annotations its stack bookkeeping is right.)
#if defined(__SANITIZE_ADDRESS__)
inline void asan_start(void** fake, const void* bottom, size_t size) {
  __sanitizer_start_switch_fiber(fake, bottom, size);
}
inline void asan_finish(void* fake, const void** bottom, size_t* size) {
  __sanitizer_finish_switch_fiber(fake, bottom, size);
}
#else
inline void asan_start(void**, const void*, size_t) {}
inline void asan_finish(void*, const void**, size_t*) {}
#endif

// Fiber -> scheduler (the fiber resumes here when it is released).
inline void yield(FiberState why) {
  Fiber& f = *t_fiber;
  Block& b = *t_blk;
  f.state = why;
  asan_start(&f.asan_fake_stack, b.sched_stack_bottom, b.sched_stack_size);
  swapcontext(&f.ctx, &b.scheduler);
  asan_finish(f.asan_fake_stack, nullptr, nullptr);
}

inline void fiber_entry(unsigned lo, unsigned hi) {
  Block& b = *reinterpret_cast<Block*>((static_cast<uintptr_t>(hi) << 32) | lo);
  asan_finish(nullptr, &b.sched_stack_bottom, &b.sched_stack_size);
  (*b.body)();
  // An exited thread no longer takes part in barriers (as on the GPU).
  Fiber& f = *t_fiber;
  f.state = FiberState::Done;
  b.warps[f.warp].alive[f.lane] = false;
  asan_start(nullptr, b.sched_stack_bottom, b.sched_stack_size);  // this stack is finished
  setcontext(&b.scheduler);
}

inline void warp_barrier() { yield(FiberState::AtWarpBarrier); }

// Value of lane `src` of the calling warp at this collective (all lanes write, then read).
template <typename T>
T exchange(T v, int src) {
  static_assert(sizeof(T) <= sizeof(uint64_t), "shuffle of a type wider than 8 bytes");
  Warp& w = t_blk->warps[t_warp];
  std::memcpy(&w.slot[t_lane], &v, sizeof(T));
  warp_barrier();
  T out = v;
  if (src >= 0 && src < kWarp) {
    if (src >= w.lanes || !w.alive[src]) {
      fault("shuffle reads a lane that does not exist or has exited");
    } else {
      std::memcpy(&out, &w.slot[src], sizeof(T));
    }
  }
  warp_barrier();
  return out;
}

inline void check_full_mask(unsigned mask) {
  const Warp& w = t_blk->warps[t_warp];
  const unsigned want = w.lanes == kWarp ? 0xffffffffu : ((1u << w.lanes) - 1u);
  if ((mask & want) != want) fault("warp collective with a partial mask (not emulated)");
}

// Runs one block to completion. Returns false on a deadlock (threads wait at barriers
// that can never be released, e.g. __syncthreads in divergent code).
inline bool run_block(Block& b, dim3 bid, unsigned nthreads) {
  t_block = uint3{bid.x, bid.y, bid.z};
  t_blk = &b;
  const auto self = reinterpret_cast<uintptr_t>(&b);
  for (unsigned i = 0; i < nthreads; ++i) {
    Fiber& f = b.fibers[i];
    f.state = FiberState::Ready;
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = f.stack.get();
    f.ctx.uc_stack.ss_size = kFiberStack;
    f.ctx.uc_link = nullptr;
    makecontext(&f.ctx, reinterpret_cast<void (*)()>(fiber_entry), 2, static_cast<unsigned>(self & 0xffffffffu),
                static_cast<unsigned>(self >> 32));
  }
  for (auto& w : b.warps)
    for (int l = 0; l < w.lanes; ++l) w.alive[l] = true;
  // Between two barriers the threads run in a fresh random order each round: code that
  // reads what another thread writes without a barrier in between then sees the old
  // value in some rounds (thread 0 always first, as at first, hid a missing barrier
  // after `if (threadIdx.x == 0) shared = ...`). Seeded, so a failure reproduces.
  std::vector<unsigned> order(nthreads);
  for (unsigned i = 0; i < nthreads; ++i) order[i] = i;
  uint64_t rng = 0x9e3779b97f4a7c15ull ^ (uint64_t{bid.x} << 32 | uint64_t{bid.y} << 16 | bid.z);
  for (;;) {
    for (unsigned i = nthreads; i > 1; --i) {  // Fisher-Yates with xorshift64
      rng ^= rng << 13;
      rng ^= rng >> 7;
      rng ^= rng << 17;
      std::swap(order[i - 1], order[rng % i]);
    }
    bool ran = false;
    for (unsigned i : order) {
      Fiber& f = b.fibers[i];
      if (f.state != FiberState::Ready) continue;
      t_fiber = &f;
      t_thread = f.tid;
      t_warp = f.warp;
      t_lane = f.lane;
      asan_start(&b.sched_fake_stack, f.stack.get(), kFiberStack);
      swapcontext(&b.scheduler, &f.ctx);
      asan_finish(b.sched_fake_stack, nullptr, nullptr);
      ran = true;
    }
    size_t live = 0, at_block = 0;
    for (unsigned i = 0; i < nthreads; ++i) {
      live += b.fibers[i].state != FiberState::Done;
      at_block += b.fibers[i].state == FiberState::AtBlockBarrier;
    }
    if (live == 0) return true;
    bool released = false;
    if (at_block == live) {
      for (unsigned i = 0; i < nthreads; ++i)
        if (b.fibers[i].state == FiberState::AtBlockBarrier) b.fibers[i].state = FiberState::Ready;
      released = true;
    }
    for (size_t w = 0; w < b.warps.size(); ++w) {
      const unsigned first = static_cast<unsigned>(w) * kWarp;
      int waiting = 0, alive = 0;
      for (int l = 0; l < b.warps[w].lanes; ++l) {
        const FiberState s = b.fibers[first + l].state;
        alive += s != FiberState::Done;
        waiting += s == FiberState::AtWarpBarrier;
      }
      if (alive > 0 && waiting == alive) {
        for (int l = 0; l < b.warps[w].lanes; ++l) b.fibers[first + l].state = FiberState::Ready;
        released = true;
      }
    }
    if (!released && !ran) return false;
  }
}

// While set, a launch is checked against the limits and recorded in g_launches, and no
// block runs: for launchers whose real sizes would take the emulation hours (a grid of
// 65536 blocks), so a test can see that they split the work within the device limits.
inline bool g_config_only = false;
inline std::vector<Config> g_launches;

struct ConfigOnly {
  ConfigOnly() {
    g_config_only = true;
    g_launches.clear();
  }
  ~ConfigOnly() { g_config_only = false; }
};

template <typename F>
void launch(const Config& cfg, const F& body) {
  const dim3 g = cfg.grid, bd = cfg.block;
  const unsigned long long nthreads = 1ull * bd.x * bd.y * bd.z;
  if (g.x == 0 || g.y == 0 || g.z == 0 || g.x > 0x7fffffffu || g.y > 65535 || g.z > 65535 || nthreads == 0 ||
      nthreads > kMaxThreadsPerBlock || bd.z > 64) {
    g_last_error = cudaErrorInvalidConfiguration;
    return;
  }
  if (cfg.shared > kMaxDynamicShared) {
    g_last_error = cudaErrorInvalidValue;
    return;
  }
  if (g_config_only) {
    g_launches.push_back(cfg);
    return;
  }
  g_grid_dim = g;
  g_block_dim = bd;
  std::vector<unsigned char> shared(cfg.shared + 16, 0xff);
  g_dynamic_shared = cfg.shared ? shared.data() : nullptr;
  const std::function<void()> fn = body;
  Block b;
  b.body = &fn;
  b.fibers.resize(nthreads);
  for (unsigned i = 0; i < nthreads; ++i) {
    Fiber& f = b.fibers[i];
    f.stack.reset(new char[kFiberStack]);
    f.tid = uint3{i % bd.x, (i / bd.x) % bd.y, i / (bd.x * bd.y)};
    f.warp = static_cast<int>(i / kWarp);
    f.lane = static_cast<int>(i % kWarp);
  }
  b.warps.resize((nthreads + kWarp - 1) / kWarp);
  for (size_t w = 0; w < b.warps.size(); ++w)
    b.warps[w].lanes = static_cast<int>(std::min<unsigned long long>(kWarp, nthreads - w * kWarp));
  for (unsigned z = 0; z < g.z; ++z)
    for (unsigned y = 0; y < g.y; ++y)
      for (unsigned x = 0; x < g.x; ++x) {
        // Each block starts from garbage shared memory, not from the previous block's.
        std::fill(shared.begin(), shared.end(), 0xff);
        if (!run_block(b, dim3(x, y, z), static_cast<unsigned>(nthreads))) {
          fault("deadlock: threads wait at barriers that cannot be released");
          g_dynamic_shared = nullptr;
          return;
        }
      }
  g_dynamic_shared = nullptr;
}

}  // namespace ptqx_emu

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define threadIdx (::ptqx_emu::t_thread)
#define blockIdx (::ptqx_emu::t_block)
#define blockDim (::ptqx_emu::g_block_dim)
#define gridDim (::ptqx_emu::g_grid_dim)

inline void __syncthreads() { ::ptqx_emu::yield(::ptqx_emu::FiberState::AtBlockBarrier); }

template <typename T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  ::ptqx_emu::check_full_mask(mask);
  const int lane = ::ptqx_emu::t_lane, src = lane + static_cast<int>(delta);
  // Out of the segment: the lane keeps its own value (CUDA semantics).
  const bool inside = (lane % width) + static_cast<int>(delta) < width;
  const T got = ::ptqx_emu::exchange(v, inside ? src : -1);
  return got;
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  ::ptqx_emu::check_full_mask(mask);
  const int lane = ::ptqx_emu::t_lane, src = lane ^ lane_mask;
  const bool inside = src / width == lane / width;
  return ::ptqx_emu::exchange(v, inside ? src : -1);
}
inline int __any_sync(unsigned mask, int pred) {
  ::ptqx_emu::check_full_mask(mask);
  auto& w = ::ptqx_emu::t_blk->warps[::ptqx_emu::t_warp];
  w.slot[::ptqx_emu::t_lane] = pred != 0;
  ::ptqx_emu::warp_barrier();
  int any = 0;
  for (int l = 0; l < w.lanes; ++l) any |= (w.alive[l] && w.slot[l] != 0);
  ::ptqx_emu::warp_barrier();
  return any;
}

// Round-to-nearest intrinsics: the host operations round to nearest already (the tests
// build without FMA contraction, -ffp-contract=off).
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline float __int_as_float(int i) {
  float f;
  std::memcpy(&f, &i, sizeof f);
  return f;
}
inline float __int2float_rn(int i) { return static_cast<float>(i); }
inline int __float2int_rn(float f) { return static_cast<int>(std::nearbyintf(f)); }
template <typename T>
T atomicAdd(T* address, T v) {
  // All threads run on one OS thread and switch only at barriers: a plain add is atomic.
  static_assert(std::is_arithmetic_v<T>);
  const T old = *address;
  *address = old + v;
  return old;
}

// CUDA defines atomicMax for integers only.
template <typename T>
T atomicMax(T* address, T v) {
  static_assert(std::is_integral_v<T>);
  const T old = *address;
  *address = old > v ? old : v;
  return old;
}

inline cudaError_t cudaGetLastError() {
  const cudaError_t e = ::ptqx_emu::g_last_error;
  ::ptqx_emu::g_last_error = cudaSuccess;
  return e;
}
inline cudaError_t cudaMemsetAsync(void* p, int v, size_t n, cudaStream_t = nullptr) {
  std::memset(p, v, n);
  return cudaSuccess;
}
