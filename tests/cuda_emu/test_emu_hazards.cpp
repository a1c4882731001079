// The emulator itself (include/ptqx_cuda_emu.h): the kernel tests trust it to expose a
// missing __syncthreads, so this pins that it does. Each kernel below exists in a correct
// form and in a form with one barrier removed; the emulator must give the right answer for
// the first and a wrong one for the second, both for a read before its writer (RAW) and
// for an overwrite before the last read of the old value (WAR), through a __shared__
// scalar, a __shared__ array and dynamic shared memory. It also checks that dynamic shared
// memory starts as NaN bytes and that barriers which can never be released are reported
// as a deadlock.
#include <cmath>
#include <cstdio>
#include <vector>

#include "emu_test.h"

namespace {

constexpr int kThreads = 64;
constexpr int kIters = 5;

// RAW: thread 0 publishes a value that every thread then reads.
template <bool Barrier>
__global__ void broadcast(const float* in, float* out) {
  __shared__ float value;
  if (threadIdx.x == 0) value = in[blockIdx.x];
  if (Barrier) __syncthreads();
  out[blockIdx.x * blockDim.x + threadIdx.x] = value;
}

// WAR through a scalar: every thread reads `total`, then thread 0 overwrites it for the
// next iteration; without the second barrier some threads read the next iteration's value.
template <bool Barrier>
__global__ void reuse_scalar(const float* in, float* out) {
  __shared__ float total;
  for (int it = 0; it < kIters; ++it) {
    if (threadIdx.x == 0) total = in[it];
    __syncthreads();
    out[it * blockDim.x + threadIdx.x] = total;
    if (Barrier) __syncthreads();
  }
}

// WAR through an array: thread t reads its neighbour's slot, then overwrites its own.
template <bool Barrier>
__global__ void shift_array(float* out) {
  __shared__ float s[kThreads];
  s[threadIdx.x] = 0.f;
  __syncthreads();
  for (int it = 0; it < kIters; ++it) {
    const float v = s[(threadIdx.x + 1) % blockDim.x];
    if (Barrier) __syncthreads();
    s[threadIdx.x] = v + 1.f;
    __syncthreads();
  }
  out[threadIdx.x] = s[threadIdx.x];
}

// WAR through dynamic shared memory: a tree sum, then the buffer is refilled for a second
// sum while slow threads may still be reading the first one's result from slot 0.
// (Dynamic shared memory as translate.py rewrites `extern __shared__ float buf[];`: this
// file is C++ for the emulation, not a translated .cu.)
template <bool Barrier>
__global__ void two_sums(const float* in, float* out) {
  float* buf = ::ptqx_emu::dynamic_shared<float>();
  for (int pass = 0; pass < 2; ++pass) {
    buf[threadIdx.x] = in[pass * blockDim.x + threadIdx.x];
    __syncthreads();
    for (unsigned stride = blockDim.x / 2; stride > 0; stride /= 2) {
      if (threadIdx.x < stride) buf[threadIdx.x] += buf[threadIdx.x + stride];
      __syncthreads();
    }
    out[pass * blockDim.x + threadIdx.x] = buf[0];
    if (Barrier) __syncthreads();
  }
}

__global__ void read_dynamic(float* out) {
  float* buf = ::ptqx_emu::dynamic_shared<float>();
  out[threadIdx.x] = buf[threadIdx.x];
}

// Lane 0 waits at a warp shuffle that lanes 1-31 never reach (they wait at the block
// barrier, which lane 0 never reaches): neither barrier can be released.
__global__ void mismatched_barriers(float* out) {
  float v = static_cast<float>(threadIdx.x);
  if (threadIdx.x == 0)
    v = __shfl_xor_sync(0xffffffffu, v, 1);
  else
    __syncthreads();
  out[threadIdx.x] = v;
}

using ptqx_emu::Config;
using ptqx_emu::launch;

// Entries of out [want.size() rows x kThreads] that differ from their row's want.
int wrong_entries(const std::vector<float>& out, const std::vector<float>& want) {
  int wrong = 0;
  for (size_t r = 0; r < want.size(); ++r)
    for (int t = 0; t < kThreads; ++t) wrong += out[r * kThreads + t] != want[r];
  return wrong;
}

// Wrong outputs of each kernel, with (Barrier = true) or without its barrier.
template <bool Barrier>
int broadcast_wrong() {
  std::vector<float> in = {1, 2, 3, 4}, out(in.size() * kThreads);
  launch(Config(dim3(in.size()), dim3(kThreads)),
         [&] { broadcast<Barrier>(in.data(), out.data()); });
  return wrong_entries(out, in);
}

template <bool Barrier>
int reuse_scalar_wrong() {
  std::vector<float> in = {1, 2, 3, 4, 5}, out(kIters * kThreads);
  launch(Config(dim3(3), dim3(kThreads)), [&] { reuse_scalar<Barrier>(in.data(), out.data()); });
  return wrong_entries(out, in);
}

template <bool Barrier>
int shift_array_wrong() {
  std::vector<float> out(kThreads);
  launch(Config(dim3(1), dim3(kThreads)), [&] { shift_array<Barrier>(out.data()); });
  return wrong_entries(out, {static_cast<float>(kIters)});
}

template <bool Barrier>
int two_sums_wrong() {
  std::vector<float> in(2 * kThreads), out(2 * kThreads);
  for (int i = 0; i < kThreads; ++i) in[i] = 1.f, in[kThreads + i] = 2.f;
  launch(Config(dim3(1), dim3(kThreads), kThreads * sizeof(float)),
         [&] { two_sums<Barrier>(in.data(), out.data()); });
  return wrong_entries(out, {1.f * kThreads, 2.f * kThreads});
}

}  // namespace

int main() {
  CHECK(broadcast_wrong<true>() == 0);
  CHECK(broadcast_wrong<false>() > 0);
  CHECK(reuse_scalar_wrong<true>() == 0);
  CHECK(reuse_scalar_wrong<false>() > 0);
  CHECK(shift_array_wrong<true>() == 0);
  CHECK(shift_array_wrong<false>() > 0);
  CHECK(two_sums_wrong<true>() == 0);
  CHECK(two_sums_wrong<false>() > 0);
  CHECK(ptqx_emu::faults() == 0);

  // Dynamic shared memory is garbage (NaN as float) until written.
  std::vector<float> out(kThreads, 0.f);
  launch(Config(dim3(1), dim3(kThreads), kThreads * sizeof(float)),
         [&] { read_dynamic(out.data()); });
  for (float v : out) CHECK(std::isnan(v));

  // Barriers that can never be released are reported, not waited on forever.
  launch(Config(dim3(1), dim3(kThreads)), [&] { mismatched_barriers(out.data()); });
  CHECK(ptqx_emu::faults() == 1);
  std::printf("emulator hazards: ok\n");
  return 0;
}
