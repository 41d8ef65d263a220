// Shared by every kernels/*.cu. Kept tiny: each op family owns its kernels.
#pragma once
#include <stdint.h>

// Up to four channels of per-channel constants, passed by value (no device buffer to manage).
struct Chan4 {
    float v[4];
};

// Grid-stride loop over [0, n): correct for any grid the launcher picks.
#define GRID_STRIDE(i, n) \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (int64_t)(n); i += (int64_t)gridDim.x * blockDim.x)

// Sum over the block, in a fixed order (deterministic). Every thread gets the result. `scratch` holds one
// float per warp; blockDim.x must be a multiple of 32, at most 1024.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, warps = blockDim.x >> 5;
    __syncthreads();  // scratch may still be read by a previous call
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : 0.0f;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Overflow-free for any x.
__device__ __forceinline__ float sigmoidf(float x) {
    if (x >= 0.0f) return 1.0f / (1.0f + expf(-x));
    const float e = expf(x);
    return e / (1.0f + e);
}

// Activations shared by the head and the backbone's layers (one definition: kernels/*.cu are linked into one
// program by the emulated device). kind: 0 SiLU, 1 ReLU, 2 sigmoid; src/backend/layers.rs `Activation`.
// The gradients use sigmoid(-x) for 1 - s: 1 - s cancels for x above about 5 and loses relative precision.
__device__ __forceinline__ float act(int kind, float x) {
    return kind == 0 ? x * sigmoidf(x) : kind == 1 ? fmaxf(x, 0.0f) : sigmoidf(x);
}
__device__ __forceinline__ float act_grad(int kind, float x) {
    if (kind == 1) return x > 0.0f ? 1.0f : 0.0f;
    const float s = sigmoidf(x), sn = sigmoidf(-x);
    return kind == 0 ? s * (1.0f + x * sn) : s * sn;
}

// Dynamic shared memory (the launch's shared_mem_bytes), as a pointer named `name`. A macro so that the
// emulated device (emu/) can hand each block its own buffer.
#ifndef DFGPU_EMU
#define DYNAMIC_SHARED(T, name) extern __shared__ T name[]
#endif

// ln(1 + e^x) = max(x, 0) + ln(1 + e^-|x|), overflow-free for any x.
__device__ __forceinline__ float softplusf(float x) { return fmaxf(x, 0.0f) + log1pf(expf(-fabsf(x))); }
