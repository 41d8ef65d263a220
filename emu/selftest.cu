// Deliberately broken kernels: the emulated device must report each one (tests/gpu/emu.rs). Not part of
// kernels/: they exist only to prove that the checks can fail.
#include <stdint.h>

// Threads of a block write one cell in turn, then read it: the value read depends on the thread order.
extern "C" __global__ void selftest_race(float* out) {
    __shared__ float cell;
    cell = (float)threadIdx.x;
    __syncthreads();
    out[threadIdx.x] = cell;
}

// Writes one float past the end of an n-float buffer (ASan reports it).
extern "C" __global__ void selftest_out_of_bounds(float* out, int n) {
    if (threadIdx.x == 0) out[n] = 1.0f;
}

// Only the lower half of the block reaches the barrier.
extern "C" __global__ void selftest_divergent_barrier(float* out) {
    if (threadIdx.x < blockDim.x / 2) {
        __syncthreads();
        out[threadIdx.x] = 1.0f;
    }
}

// A full-mask shuffle launched with a block of 16 threads: lanes 16 to 31 do not exist.
extern "C" __global__ void selftest_partial_warp_shuffle(float* out) {
    out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, (float)threadIdx.x, 1);
}

// Signed overflow in index math (UBSan reports it).
extern "C" __global__ void selftest_int_overflow(float* out, int big) {
    const int i = big * (int)(threadIdx.x + 2);
    out[threadIdx.x] = (float)(i & 1);
}
