// Batch normalization over N, H, W per channel (src/backend/norm.rs; src/backend/cpu/norm.rs is the reference).
// Statistics: one block per channel, two passes (the variance of values minus their mean), fixed order.
#include "common.cuh"

// Sum over the n x hw values of channel ch of f(value index).
template <typename F>
__device__ __forceinline__ float channel_sum(int n, int c, int hw, int ch, F f, float* scratch) {
    float s = 0.0f;
    for (long long i = threadIdx.x; i < (long long)n * hw; i += blockDim.x) {
        const long long img = i / hw, k = i - img * hw;
        s += f((img * c + ch) * hw + k);
    }
    return block_sum(s, scratch);
}

// Batch statistics; running = (1 - momentum) running + momentum batch (unbiased variance), as PyTorch.
extern "C" __global__ void bn_stats(const float* __restrict__ x, int n, int c, int hw, float eps, float momentum,
                                   float* __restrict__ mean, float* __restrict__ invstd, float* __restrict__ state,
                                   long long o_rmean, long long o_rvar) {
    __shared__ float scratch[32];
    const int ch = blockIdx.x;
    const float count = (float)n * hw;
    const float m = channel_sum(n, c, hw, ch, [&](long long i) { return x[i]; }, scratch) / count;
    const float var = channel_sum(n, c, hw, ch, [&](long long i) { const float d = x[i] - m; return d * d; }, scratch) / count;
    if (threadIdx.x == 0) {
        mean[ch] = m;
        invstd[ch] = 1.0f / sqrtf(var + eps);
        state[o_rmean + ch] = (1.0f - momentum) * state[o_rmean + ch] + momentum * m;
        state[o_rvar + ch] = (1.0f - momentum) * state[o_rvar + ch] + momentum * var * count / (count - 1.0f);
    }
}

// y = (x - mean) invstd gamma + beta. With `from_var`, `scale_src` holds variances (inference: running
// statistics) and invstd = 1 / sqrt(var + eps); otherwise it holds invstd.
extern "C" __global__ void bn_apply(const float* __restrict__ x, const float* __restrict__ gamma,
                                   const float* __restrict__ beta, const float* __restrict__ mean,
                                   const float* __restrict__ scale_src, int from_var, float eps, long long total, int c,
                                   int hw, float* __restrict__ y) {
    GRID_STRIDE(i, total) {
        const int ch = (int)((i / hw) % c);
        const float is = from_var ? 1.0f / sqrtf(scale_src[ch] + eps) : scale_src[ch];
        const float s = is * gamma[ch];
        y[i] = x[i] * s + (beta[ch] - mean[ch] * s);
    }
}

// d gamma = sum dy xhat, d beta = sum dy, per channel, into the flat gradient buffer.
extern "C" __global__ void bn_backward_reduce(const float* __restrict__ x, const float* __restrict__ dy,
                                             const float* __restrict__ mean, const float* __restrict__ invstd, int n,
                                             int c, int hw, float* __restrict__ grads, long long o_dgamma,
                                             long long o_dbeta) {
    __shared__ float scratch[32];
    const int ch = blockIdx.x;
    const float m = mean[ch], is = invstd[ch];
    const float sdy = channel_sum(n, c, hw, ch, [&](long long i) { return dy[i]; }, scratch);
    const float sdyx = channel_sum(n, c, hw, ch, [&](long long i) { return dy[i] * (x[i] - m) * is; }, scratch);
    if (threadIdx.x == 0) {
        grads[o_dgamma + ch] = sdyx;
        grads[o_dbeta + ch] = sdy;
    }
}

// dx = gamma invstd (dy - d beta / count - xhat d gamma / count).
extern "C" __global__ void bn_backward_dx(const float* __restrict__ x, const float* __restrict__ dy,
                                         const float* __restrict__ gamma, const float* __restrict__ mean,
                                         const float* __restrict__ invstd, const float* __restrict__ grads,
                                         long long o_dgamma, long long o_dbeta, int n, int c, int hw,
                                         float* __restrict__ dx) {
    const float inv_count = 1.0f / ((float)n * hw);
    GRID_STRIDE(i, (long long)n * c * hw) {
        const int ch = (int)((i / hw) % c);
        const float xh = (x[i] - mean[ch]) * invstd[ch];
        dx[i] = gamma[ch] * invstd[ch] * (dy[i] - grads[o_dbeta + ch] * inv_count - xh * grads[o_dgamma + ch] * inv_count);
    }
}
