// The backbone's small layers (src/backend/layers.rs; src/backend/cpu/layers.rs is the reference): activations,
// global average pooling, channel and sample scaling, the residual add, the linear layer's bias and its
// gradient (its products run on cuBLAS), and columns copied between matrices.
#include "common.cuh"

extern "C" __global__ void act_forward(const float* __restrict__ x, float* __restrict__ y, long long n, int kind) {
    GRID_STRIDE(i, n) y[i] = act(kind, x[i]);
}

extern "C" __global__ void act_backward(const float* __restrict__ x, const float* __restrict__ dy,
                                        float* __restrict__ dx, long long n, int kind) {
    GRID_STRIDE(i, n) dx[i] = dy[i] * act_grad(kind, x[i]);
}

// One block per (n, c): the mean of its hw values.
extern "C" __global__ void avg_pool(const float* __restrict__ x, float* __restrict__ y, int hw) {
    __shared__ float scratch[32];
    const float* xc = x + (long long)blockIdx.x * hw;
    float s = 0.0f;
    for (int k = threadIdx.x; k < hw; k += blockDim.x) s += xc[k];
    s = block_sum(s, scratch);
    if (threadIdx.x == 0) y[blockIdx.x] = s / (float)hw;
}

extern "C" __global__ void avg_pool_backward(const float* __restrict__ dy, float* __restrict__ dx, long long total, int hw) {
    const float inv = 1.0f / (float)hw;
    GRID_STRIDE(i, total) dx[i] = dy[i / hw] * inv;
}

// y = x * s[i / per]: per-channel scaling (per = hw) or per-sample scaling (per = c h w).
extern "C" __global__ void scale_groups(const float* __restrict__ x, const float* __restrict__ s, float* __restrict__ y,
                                        long long total, long long per) {
    GRID_STRIDE(i, total) y[i] = x[i] * s[i / per];
}

// ds[n, c] = sum over hw of x dy: one block per (n, c).
extern "C" __global__ void channel_scale_ds(const float* __restrict__ x, const float* __restrict__ dy,
                                           float* __restrict__ ds, int hw) {
    __shared__ float scratch[32];
    const long long base = (long long)blockIdx.x * hw;
    float s = 0.0f;
    for (int k = threadIdx.x; k < hw; k += blockDim.x) s += x[base + k] * dy[base + k];
    s = block_sum(s, scratch);
    if (threadIdx.x == 0) ds[blockIdx.x] = s;
}

extern "C" __global__ void add(const float* __restrict__ a, const float* __restrict__ b, float* __restrict__ y, long long n) {
    GRID_STRIDE(i, n) y[i] = a[i] + b[i];
}

// dst[r][dst_at + j] = src[r][src_at + j] for j < width: matrices side by side, and back.
extern "C" __global__ void copy_columns(const float* __restrict__ src, int src_cols, int src_at,
                                        float* __restrict__ dst, int dst_cols, int dst_at, int width, long long total) {
    GRID_STRIDE(i, total) {
        const long long r = i / width;
        const int j = (int)(i % width);
        dst[r * dst_cols + dst_at + j] = src[r * src_cols + src_at + j];
    }
}

// y[r][j] += b[j].
extern "C" __global__ void bias_rows(float* __restrict__ y, const float* __restrict__ b, long long total, int cols) {
    GRID_STRIDE(i, total) y[i] += b[i % cols];
}

// out[j] = sum over rows of x[r][j], in row order.
extern "C" __global__ void col_sum(const float* __restrict__ x, int rows, int cols, float* __restrict__ out) {
    GRID_STRIDE(j, cols) {
        float s = 0.0f;
        for (int r = 0; r < rows; ++r) s += x[(long long)r * cols + j];
        out[j] = s;
    }
}
