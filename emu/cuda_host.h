// CUDA C++ on the host: what kernels/*.cu use of CUDA, for the emulated device (emu/README.md). The build
// force-includes this header before each kernel file (g++ -include), so the kernels compile unchanged.
// Each CUDA thread is a fiber (runtime.cpp); threadIdx and friends read the running fiber's state, and
// __syncthreads and the warp operations switch fibers.
#pragma once
#define DFGPU_EMU 1

#include <math.h>
#include <stdint.h>
#include <string.h>

#include <algorithm>
#include <cstddef>
#include <type_traits>
#include <utility>

struct uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};
struct __attribute__((aligned(8))) float2 {
    float x, y;
};
struct __attribute__((aligned(16))) float4 {
    float x, y, z, w;
};
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }

namespace emu {

// The running block and thread, set by the scheduler before it switches to a fiber.
struct BlockState {
    dim3 grid, block;
    uint3 index;
    void* dynamic_shared;
};
struct ThreadState {
    uint3 index;
    unsigned linear;
    BlockState* block;
};

// Each fiber's stack lies in a region of REGION bytes aligned to REGION: a guard page, the stack, and this
// fiber's ThreadState in the region's last HEADER bytes, on the page the stack starts from (one page touched per
// switch, not two). So the running thread is found from the stack pointer, with no thread-local variable
// (whose every read, in a shared library, is a call to __tls_get_addr).
#if defined(__SANITIZE_ADDRESS__)
constexpr uintptr_t REGION = 1u << 20;  // ASan's redzones make frames several times larger
#else
constexpr uintptr_t REGION = 1u << 17;
#endif
constexpr uintptr_t PAGE = 4096, HEADER = 64;
inline ThreadState* self() {
    const uintptr_t base = reinterpret_cast<uintptr_t>(__builtin_frame_address(0)) & ~(REGION - 1);
    return reinterpret_cast<ThreadState*>(base + REGION - HEADER);
}

void syncthreads();
// Exchange 64 bits with the lanes of `mask`: every lane of the mask must arrive (or the launch fails naming
// the kernel); returns the value that lane `src(lane)` put in. `src_lane` < 0 means keep our own value.
uint64_t warp_exchange(unsigned mask, uint64_t mine, int src_lane);
inline unsigned lane_id() { return self()->linear & 31u; }

template <class T>
inline T shfl_with(unsigned mask, T v, int src) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "shuffle of up to 64 bits");
    uint64_t bits = 0;
    memcpy(&bits, &v, sizeof(T));
    bits = warp_exchange(mask, bits, src);
    T out;
    memcpy(&out, &bits, sizeof(T));
    return out;
}

void* dynamic_shared();
}  // namespace emu

#define threadIdx (::emu::self()->index)
#define blockIdx (::emu::self()->block->index)
#define blockDim (::emu::self()->block->block)
#define gridDim (::emu::self()->block->grid)
#define warpSize 32

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
// Block-scope thread_local is static: one copy per OS thread, and a block runs on one OS thread from start
// to end, so every fiber of the block sees the same array, as threads of a block see their shared memory.
#define __shared__ thread_local
#define DYNAMIC_SHARED(T, name) T* name = static_cast<T*>(::emu::dynamic_shared())

inline void __syncthreads() { ::emu::syncthreads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { ::emu::warp_exchange(mask, 0, -1); }
template <class T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
    const unsigned lane = ::emu::lane_id();
    const unsigned base = lane & ~(unsigned)(width - 1);
    return ::emu::shfl_with(mask, v, (int)(base + ((lane - base) ^ (unsigned)lane_mask) % (unsigned)width));
}
template <class T>
inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
    const unsigned lane = ::emu::lane_id();
    return ::emu::shfl_with(mask, v, (int)((lane & ~(unsigned)(width - 1)) + (unsigned)src % (unsigned)width));
}
template <class T>
inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    const unsigned lane = ::emu::lane_id(), base = lane & ~(unsigned)(width - 1);
    const unsigned src = lane - base + delta;
    return ::emu::shfl_with(mask, v, (int)(src < (unsigned)width ? base + src : lane));
}

// Device math that the host C library lacks. glibc already declares __expf and __logf.
#define EMU_MIN_MAX(T)                                \
    inline T min(T a, T b) { return a < b ? a : b; } \
    inline T max(T a, T b) { return a > b ? a : b; }
EMU_MIN_MAX(int)
EMU_MIN_MAX(unsigned)
EMU_MIN_MAX(long long)
EMU_MIN_MAX(unsigned long long)
#undef EMU_MIN_MAX
// sin(pi x) and cos(pi x) in double, rounded once: within an ulp of CUDA's sincospif.
inline void sincospif(float x, float* s, float* c) {
    const double r = fmod((double)x, 2.0) * M_PI;
    *s = (float)sin(r);
    *c = (float)cos(r);
}
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : x > 1.0f ? 1.0f : x; }
