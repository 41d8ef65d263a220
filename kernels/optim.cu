// The optimizer over one flat parameter buffer (src/backend/optim.rs; src/backend/cpu/optim.rs is the reference):
// per-tensor norms in two deterministic stages, then the AdamW step, clipped by a factor read on the device.
#include "common.cuh"

#define NORM_CHUNK 4096

// Stage 1: each block reduces one chunk of one tensor (block b belongs to the tensor t with
// block_start[t] <= b < block_start[t + 1]) to two partial sums: of (a - sub b)^2 and of b^2. The optimizer's
// norms are a = gradients, b = parameters, sub = 0; the size of a step is a = after, b = before, sub = 1.
extern "C" __global__ void param_norms_partial(const float* __restrict__ a, const float* __restrict__ b, float sub,
                                               const long long* __restrict__ seg_off, const long long* __restrict__ seg_len,
                                               const int* __restrict__ block_start, int nseg, float* __restrict__ partial) {
    __shared__ float scratch[32];
    const int blk = blockIdx.x;
    int lo = 0, hi = nseg - 1;  // the tensor of this block: the last t with block_start[t] <= blk
    while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (block_start[mid] <= blk) lo = mid; else hi = mid - 1;
    }
    const long long begin = (long long)(blk - block_start[lo]) * NORM_CHUNK;
    const long long end = min(begin + NORM_CHUNK, seg_len[lo]);
    float as = 0.0f, bs = 0.0f;
    for (long long i = begin + threadIdx.x; i < end; i += blockDim.x) {
        const float bv = b[seg_off[lo] + i], av = a[seg_off[lo] + i] - sub * bv;
        as += av * av;
        bs += bv * bv;
    }
    as = block_sum(as, scratch);
    bs = block_sum(bs, scratch);
    if (threadIdx.x == 0) { partial[2 * blk] = as; partial[2 * blk + 1] = bs; }
}

// Stage 2, one block: per tensor, the partial sums in block order (in f64); then the total norm and the clip
// factor min(1, max_norm / (total + 1e-6)), or 1 when max_norm <= 0.
extern "C" __global__ void param_norms_finish(const float* __restrict__ partial, const int* __restrict__ block_start,
                                              int nseg, float max_norm, float* __restrict__ out) {
    __shared__ double totals[1024];
    double mine = 0.0;
    for (int t = threadIdx.x; t < nseg; t += blockDim.x) {
        double gs = 0.0, ps = 0.0;
        for (int b = block_start[t]; b < block_start[t + 1]; ++b) { gs += partial[2 * b]; ps += partial[2 * b + 1]; }
        out[2 * t] = (float)gs;
        out[2 * t + 1] = (float)ps;
        mine += gs;
    }
    totals[threadIdx.x] = mine;
    __syncthreads();
    if (threadIdx.x == 0) {
        double total = 0.0;
        for (int i = 0; i < blockDim.x; ++i) total += totals[i];
        total = sqrt(total);
        out[2 * nseg] = (float)total;
        out[2 * nseg + 1] = max_norm > 0.0f ? (float)fmin(1.0, (double)max_norm / (total + 1e-6)) : 1.0f;
    }
}

// Matches `AdamArgs` in src/backend/cuda/optim.rs.
struct AdamArgs {
    float lr, beta1, beta2, eps, weight_decay, bc1, bc2_sqrt;
    int clip_index;
};

// AdamW in PyTorch's order of operations; the gradient is scaled by norms[clip_index].
extern "C" __global__ void adamw_step(float* __restrict__ p, const float* __restrict__ g, float* __restrict__ m,
                                      float* __restrict__ v, const uint8_t* __restrict__ mask,
                                      const float* __restrict__ norms, long long n, AdamArgs a) {
    const float clip = norms[a.clip_index];
    const float step_size = a.lr / a.bc1, decay = 1.0f - a.lr * a.weight_decay;
    GRID_STRIDE(i, n) {
        const float gi = g[i] * clip;
        float pi = p[i];
        if (mask[i]) pi *= decay;
        const float mi = a.beta1 * m[i] + (1.0f - a.beta1) * gi;
        const float vi = a.beta2 * v[i] + (1.0f - a.beta2) * gi * gi;
        const float denom = sqrtf(vi) / a.bc2_sqrt + a.eps;
        m[i] = mi;
        v[i] = vi;
        p[i] = pi - step_size * mi / denom;
    }
}

// Matches `SgdArgs` in src/backend/cuda/optim.rs.
struct SgdArgs {
    float lr, momentum, weight_decay;
    int clip_index;
};

// SGD with momentum in PyTorch's order of operations (coupled L2 decay, dampening 0); m is the momentum.
extern "C" __global__ void sgd_step(float* __restrict__ p, const float* __restrict__ g, float* __restrict__ m,
                                    const uint8_t* __restrict__ mask, const float* __restrict__ norms, long long n,
                                    SgdArgs a) {
    const float clip = norms[a.clip_index];
    GRID_STRIDE(i, n) {
        const float pi = p[i];
        float gi = g[i] * clip;
        if (mask[i]) gi += a.weight_decay * pi;
        const float mi = a.momentum * m[i] + gi;
        m[i] = mi;
        p[i] = pi - a.lr * mi;
    }
}
