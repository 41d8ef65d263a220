// The unfused baseline that benches/head.rs times the fused head kernels against: the same head (LayerNorm, SiLU,
// dropout, ungated, both branches) and focal loss, one simple kernel per step around the same cuBLAS products,
// as a framework without fusion runs it. Row-major matrices; `cols` is the row length.
//
// Bench-only, so not in the shipped library: benches/head.rs compiles this file at run time with NVRTC. It
// includes kernels/head.cu for the counter hash and the row statistics, so that both draw the same dropout mask
// and the bench can check that they agree (NVRTC compiles the fused kernels here too; they are not launched).
#include "head.cu"

// LayerNorm of each row (one block per row): y = (x - mean) rstd gamma + beta; saves mean and rstd.
extern "C" __global__ void bl_layernorm(const float* x, const float* gamma, const float* beta, int cols, float* y,
                                        float* mean_out, float* rstd_out) {
    __shared__ float scratch[32];
    const float* xr = x + (long long)blockIdx.x * cols;
    const float2 st = row_stats(xr, cols, scratch);
    for (int k = threadIdx.x; k < cols; k += blockDim.x) y[(long long)blockIdx.x * cols + k] = (xr[k] - st.x) * st.y * gamma[k] + beta[k];
    if (threadIdx.x == 0) { mean_out[blockIdx.x] = st.x; rstd_out[blockIdx.x] = st.y; }
}

// dst[r][off + k] = src[r][k] (concatenation), or dst[r][k] = src[r][off + k] with `gather` (split).
extern "C" __global__ void bl_copy_cols(const float* src, int src_cols, float* dst, int dst_cols, int rows, int cols,
                                        int off, int gather) {
    GRID_STRIDE(i, (long long)rows * cols) {
        const long long r = i / cols, k = i % cols;
        if (gather) dst[r * dst_cols + k] = src[r * src_cols + off + k];
        else dst[r * dst_cols + off + k] = src[r * src_cols + k];
    }
}

extern "C" __global__ void bl_bias_add(float* x, const float* bias, int rows, int cols) {
    GRID_STRIDE(i, (long long)rows * cols) x[i] += bias[i % cols];
}

extern "C" __global__ void bl_silu(const float* x, float* y, long long n) {
    GRID_STRIDE(i, n) y[i] = x[i] * sigmoidf(x[i]);
}

extern "C" __global__ void bl_silu_bwd(const float* dy, const float* x, float* dx, long long n) {
    GRID_STRIDE(i, n) dx[i] = dy[i] * act_grad(0, x[i]);
}

// Dropout forward: draws and keeps the mask (the same hash as the fused kernels).
extern "C" __global__ void bl_dropout(const float* x, float* y, float* mask, int rows, int cols, float p,
                                      unsigned long long seed) {
    GRID_STRIDE(i, (long long)rows * cols) {
        const float m = counter_uniform(seed, 0, (unsigned)(i / cols), (unsigned)(i % cols)) < p ? 0.0f : 1.0f / (1.0f - p);
        mask[i] = m;
        y[i] = x[i] * m;
    }
}

extern "C" __global__ void bl_mul(const float* a, const float* b, float* y, long long n) {
    GRID_STRIDE(i, n) y[i] = a[i] * b[i];
}

// Focal loss per sample (alpha, gamma; label 1 = fake).
extern "C" __global__ void bl_focal(const float* x, const float* y, float* loss, int n, float alpha, float gamma) {
    GRID_STRIDE(i, n) {
        const float p = sigmoidf(x[i]), q = sigmoidf(-x[i]);
        loss[i] = y[i] * -alpha * powf(q, gamma) * -softplusf(-x[i]) + (1.0f - y[i]) * -(1.0f - alpha) * powf(p, gamma) * -softplusf(x[i]);
    }
}

extern "C" __global__ void bl_focal_bwd(const float* x, const float* y, float* dx, int n, float alpha, float gamma) {
    GRID_STRIDE(i, n) {
        const float p = sigmoidf(x[i]), q = sigmoidf(-x[i]), lp = -softplusf(-x[i]), lq = -softplusf(x[i]);
        const float d1 = alpha * powf(q, gamma) * (gamma * p * lp - q), d0 = (1.0f - alpha) * powf(p, gamma) * (p - gamma * q * lq);
        dx[i] = (y[i] * d1 + (1.0f - y[i]) * d0) / (float)n;
    }
}

// out[k] = sum over rows of x[r][k] (bias gradients; the mean with `scale` = 1/rows).
extern "C" __global__ void bl_colsum(const float* x, int rows, int cols, float scale, float* out) {
    GRID_STRIDE(k, cols) {
        float s = 0.0f;
        for (int r = 0; r < rows; ++r) s += x[(long long)r * cols + k];
        out[k] = s * scale;
    }
}

// LayerNorm backward for the input (one block per row), from dy and the saved statistics.
extern "C" __global__ void bl_layernorm_bwd(const float* dy, const float* x, const float* gamma, const float* mean,
                                            const float* rstd, int cols, float* dx) {
    __shared__ float scratch[32];
    const long long r = blockIdx.x;
    const float m = mean[r], rs = rstd[r];
    float a = 0.0f, b = 0.0f;
    for (int k = threadIdx.x; k < cols; k += blockDim.x) {
        const float g = dy[r * cols + k] * gamma[k];
        a += g;
        b += g * (x[r * cols + k] - m) * rs;
    }
    a = block_sum(a, scratch) / (float)cols;
    b = block_sum(b, scratch) / (float)cols;
    for (int k = threadIdx.x; k < cols; k += blockDim.x) {
        const float xh = (x[r * cols + k] - m) * rs;
        dx[r * cols + k] = rs * (dy[r * cols + k] * gamma[k] - a - xh * b);
    }
}

// LayerNorm parameter gradients: d gamma = sum_r dy xhat, d beta = sum_r dy.
extern "C" __global__ void bl_layernorm_params(const float* dy, const float* x, const float* mean, const float* rstd,
                                               int rows, int cols, float* dgamma, float* dbeta) {
    GRID_STRIDE(k, cols) {
        float g = 0.0f, b = 0.0f;
        for (int r = 0; r < rows; ++r) {
            const float d = dy[(long long)r * cols + k];
            g += d * (x[(long long)r * cols + k] - mean[r]) * rstd[r];
            b += d;
        }
        dgamma[k] = g;
        dbeta[k] = b;
    }
}
