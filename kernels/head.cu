// The fusion head, forward and backward (src/backend/head.rs has the formulas; src/backend/cpu/head.rs is the
// reference). The two matrix products (z W1^T and its two gradients) run on cuBLAS; everything around them is
// fused here: LayerNorm, branch scales, gate, bias, activation, dropout, the output layer, and their backward.
// No atomics: every reduction runs in a fixed order, so the results are the same on every run.
#include "common.cuh"

// Matches `HeadArgs` in src/backend/cuda/head.rs. Offsets index the flat parameter (and gradient) buffer;
// -1 where the configuration has no such parameter.
struct HeadArgs {
    int ds, dq, hidden;
    int norm, act, gated, branches, train;  // act: 0 SiLU, 1 ReLU; branches: 0 both, 1 spatial, 2 freq
    float dropout, branch_dropout;
    unsigned long long seed;
    long long o_gs, o_bs, o_gq, o_bq, o_gw, o_gb, o_w1, o_b1, o_w2, o_b2;
};

// The counter-based hash of src/rng.rs (`counter_uniform`): must stay identical.
__device__ __forceinline__ unsigned long long mix64(unsigned long long z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
__device__ __forceinline__ float counter_uniform(unsigned long long seed, unsigned stream, unsigned row, unsigned col) {
    const unsigned long long counter = ((unsigned long long)row << 32) | col;
    const unsigned long long z = mix64(seed ^ mix64(counter + (unsigned long long)(stream + 1) * 0x9E3779B97F4A7C15ull));
    return (float)(z >> 40) * (1.0f / 16777216.0f);
}

// (m_s, m_q) of sample b: branch switches and branch dropout (HeadConfig::branch_scales).
__device__ __forceinline__ float2 branch_scales(const HeadArgs& a, int b) {
    if (a.branches == 1) return make_float2(1.0f, 0.0f);
    if (a.branches == 2) return make_float2(0.0f, 1.0f);
    if (a.train && a.branch_dropout > 0.0f && counter_uniform(a.seed, 1, b, 0) < a.branch_dropout)
        return counter_uniform(a.seed, 2, b, 0) < 0.5f ? make_float2(0.0f, 2.0f) : make_float2(2.0f, 0.0f);
    return make_float2(1.0f, 1.0f);
}

// Dropout factor of hidden unit j of sample b (HeadConfig::keep).
__device__ __forceinline__ float keep(const HeadArgs& a, int b, int j) {
    if (!a.train || a.dropout <= 0.0f) return 1.0f;
    return counter_uniform(a.seed, 0, b, j) < a.dropout ? 0.0f : 1.0f / (1.0f - a.dropout);
}

// Mean and rstd of a row (two passes over it: the second subtracts the mean, as the reference does).
__device__ __forceinline__ float2 row_stats(const float* x, int n, float* scratch) {
    float s = 0.0f;
    for (int k = threadIdx.x; k < n; k += blockDim.x) s += x[k];
    const float mean = block_sum(s, scratch) / (float)n;
    float v = 0.0f;
    for (int k = threadIdx.x; k < n; k += blockDim.x) { const float d = x[k] - mean; v += d * d; }
    const float var = block_sum(v, scratch) / (float)n;
    return make_float2(mean, 1.0f / sqrtf(var + 1e-5f));
}

// u_k for k in [0, D) of sample b: the scaled (normalized) features before the gate.
__device__ __forceinline__ float fused_u(const HeadArgs& a, const float* p, const float* srow, const float* qrow,
                                         float4 st, float2 m, int k) {
    const bool sp = k < a.ds;
    const float x = sp ? srow[k] : qrow[k - a.ds];
    if (!a.norm) return (sp ? m.x : m.y) * x;
    const int kk = sp ? k : k - a.ds;
    const float* g = p + (sp ? a.o_gs : a.o_gq);
    const float* bt = p + (sp ? a.o_bs : a.o_bq);
    const float xh = sp ? (x - st.x) * st.y : (x - st.z) * st.w;
    return (sp ? m.x : m.y) * (xh * g[kk] + bt[kk]);
}

// Forward, before the product: one block per sample. Writes z (B x D), stats (B x 4), gate (B).
extern "C" __global__ void head_fwd_input(const float* __restrict__ p, const float* __restrict__ s,
                                          const float* __restrict__ q, int batch, HeadArgs a,
                                          float* __restrict__ z, float* __restrict__ stats, float* __restrict__ gate) {
    __shared__ float scratch[32];
    const int b = blockIdx.x;
    if (b >= batch) return;
    const int d = a.ds + a.dq;
    const float* srow = s + (long long)b * a.ds;
    const float* qrow = q + (long long)b * a.dq;
    float4 st = make_float4(0.0f, 1.0f, 0.0f, 1.0f);
    if (a.norm) {
        const float2 ss = row_stats(srow, a.ds, scratch), sq = row_stats(qrow, a.dq, scratch);
        st = make_float4(ss.x, ss.y, sq.x, sq.y);
    }
    const float2 m = branch_scales(a, b);
    float* zrow = z + (long long)b * d;
    float dot = 0.0f;
    for (int k = threadIdx.x; k < d; k += blockDim.x) {
        const float u = fused_u(a, p, srow, qrow, st, m, k);
        zrow[k] = u;
        if (a.gated) dot += p[a.o_gw + k] * u;
    }
    float g = 0.5f;
    if (a.gated) g = sigmoidf(block_sum(dot, scratch) + p[a.o_gb]);
    // Each thread rescales the elements it wrote itself: no barrier needed.
    for (int k = threadIdx.x; k < d; k += blockDim.x) zrow[k] *= k < a.ds ? 2.0f * g : 2.0f * (1.0f - g);
    if (threadIdx.x == 0) {
        reinterpret_cast<float4*>(stats)[b] = st;
        gate[b] = g;
    }
}

// Forward, after the product h = z W1^T: one block per sample. Adds b1 into h (saved for backward), applies
// the activation and dropout, and reduces the output layer to the logit.
extern "C" __global__ void head_fwd_output(const float* __restrict__ p, int batch, HeadArgs a, float* __restrict__ h,
                                           float* __restrict__ logits) {
    __shared__ float scratch[32];
    const int b = blockIdx.x;
    if (b >= batch) return;
    float* hrow = h + (long long)b * a.hidden;
    float acc = 0.0f;
    for (int j = threadIdx.x; j < a.hidden; j += blockDim.x) {
        const float hj = hrow[j] + p[a.o_b1 + j];
        hrow[j] = hj;
        acc += p[a.o_w2 + j] * act(a.act, hj) * keep(a, b, j);
    }
    acc = block_sum(acc, scratch);
    if (threadIdx.x == 0) logits[b] = acc + p[a.o_b2];
}

// Backward of the output layer, dropout and activation: one thread per hidden unit j, looping over the batch
// (coalesced: neighbouring threads read neighbouring columns). Writes dh (B x H), d w2, d b1, and d b2.
extern "C" __global__ void head_bwd_output(const float* __restrict__ p, const float* __restrict__ h,
                                           const float* __restrict__ dlogits, int batch, HeadArgs a,
                                           float* __restrict__ dh, float* __restrict__ gp) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j == 0) {
        float db2 = 0.0f;
        for (int b = 0; b < batch; ++b) db2 += dlogits[b];
        gp[a.o_b2] = db2;
    }
    if (j >= a.hidden) return;
    const float w2 = p[a.o_w2 + j];
    float dw2 = 0.0f, db1 = 0.0f;
    for (int b = 0; b < batch; ++b) {
        const long long i = (long long)b * a.hidden + j;
        const float hj = h[i], dl = dlogits[b], kp = keep(a, b, j);
        dw2 += dl * act(a.act, hj) * kp;
        const float g = dl * w2 * kp * act_grad(a.act, hj);
        dh[i] = g;
        db1 += g;
    }
    gp[a.o_w2 + j] = dw2;
    gp[a.o_b1 + j] = db1;
}

// Backward through the gate, the branch scales and the LayerNorms: one block per sample. `dz` (B x D, from
// dh W1) is overwritten with dy, the gradient at the LayerNorm outputs, which head_bwd_params reduces;
// dpre (B) receives the gate's pre-activation gradient.
extern "C" __global__ void head_bwd_input(const float* __restrict__ p, const float* __restrict__ s,
                                          const float* __restrict__ q, const float* __restrict__ stats,
                                          const float* __restrict__ gate, int batch, HeadArgs a,
                                          float* __restrict__ dz, float* __restrict__ dpre_out,
                                          float* __restrict__ ds, float* __restrict__ dq) {
    __shared__ float scratch[32];
    const int b = blockIdx.x;
    if (b >= batch) return;
    const int d = a.ds + a.dq;
    const float* srow = s + (long long)b * a.ds;
    const float* qrow = q + (long long)b * a.dq;
    const float4 st = reinterpret_cast<const float4*>(stats)[b];
    const float2 m = branch_scales(a, b);
    const float g = gate[b];
    float* dzrow = dz + (long long)b * d;

    float dpre = 0.0f;
    if (a.gated) {
        float dg = 0.0f;
        for (int k = threadIdx.x; k < d; k += blockDim.x) {
            const float u = fused_u(a, p, srow, qrow, st, m, k);
            dg += (k < a.ds ? 2.0f : -2.0f) * u * dzrow[k];
        }
        dpre = block_sum(dg, scratch) * g * (1.0f - g);
    }
    // dy = m * du, du = dz * 2g (or 2(1 - g)) + dpre * w_g; and the LayerNorm sums of each branch.
    float sum_s = 0.0f, sum_s_xh = 0.0f, sum_q = 0.0f, sum_q_xh = 0.0f;
    for (int k = threadIdx.x; k < d; k += blockDim.x) {
        const bool sp = k < a.ds;
        float du = dzrow[k] * (sp ? 2.0f * g : 2.0f * (1.0f - g));
        if (a.gated) du += dpre * p[a.o_gw + k];
        const float dy = (sp ? m.x : m.y) * du;
        dzrow[k] = dy;
        if (a.norm) {
            const float x = sp ? srow[k] : qrow[k - a.ds];
            const float xh = sp ? (x - st.x) * st.y : (x - st.z) * st.w;
            const float dxh = dy * p[(sp ? a.o_gs : a.o_gq) + (sp ? k : k - a.ds)];
            if (sp) { sum_s += dxh; sum_s_xh += dxh * xh; } else { sum_q += dxh; sum_q_xh += dxh * xh; }
        }
    }
    if (a.norm) {
        sum_s = block_sum(sum_s, scratch) / (float)a.ds;
        sum_s_xh = block_sum(sum_s_xh, scratch) / (float)a.ds;
        sum_q = block_sum(sum_q, scratch) / (float)a.dq;
        sum_q_xh = block_sum(sum_q_xh, scratch) / (float)a.dq;
    }
    // Each thread reads back only the dy it wrote itself.
    for (int k = threadIdx.x; k < d; k += blockDim.x) {
        const bool sp = k < a.ds;
        const float dy = dzrow[k];
        float dx = dy;
        if (a.norm) {
            const float x = sp ? srow[k] : qrow[k - a.ds];
            const float mean = sp ? st.x : st.z, rstd = sp ? st.y : st.w;
            const float xh = (x - mean) * rstd;
            const float dxh = dy * p[(sp ? a.o_gs : a.o_gq) + (sp ? k : k - a.ds)];
            dx = rstd * (dxh - (sp ? sum_s : sum_q) - xh * (sp ? sum_s_xh : sum_q_xh));
        }
        if (sp) ds[(long long)b * a.ds + k] = dx;
        else dq[(long long)b * a.dq + k - a.ds] = dx;
    }
    if (threadIdx.x == 0) dpre_out[b] = dpre;
}

// Parameter gradients of the LayerNorms and the gate: one thread per feature k, looping over the batch.
extern "C" __global__ void head_bwd_params(const float* __restrict__ p, const float* __restrict__ s,
                                           const float* __restrict__ q, const float* __restrict__ stats,
                                           const float* __restrict__ dy, const float* __restrict__ dpre, int batch,
                                           HeadArgs a, float* __restrict__ gp) {
    const int d = a.ds + a.dq;
    const int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k == 0 && a.gated) {
        float db = 0.0f;
        for (int b = 0; b < batch; ++b) db += dpre[b];
        gp[a.o_gb] = db;
    }
    if (k >= d) return;
    const bool sp = k < a.ds;
    float dgamma = 0.0f, dbeta = 0.0f, dw = 0.0f;
    for (int b = 0; b < batch; ++b) {
        const float4 st = reinterpret_cast<const float4*>(stats)[b];
        const float g = dy[(long long)b * d + k];
        if (a.norm) {
            const float x = sp ? s[(long long)b * a.ds + k] : q[(long long)b * a.dq + k - a.ds];
            dgamma += g * (sp ? (x - st.x) * st.y : (x - st.z) * st.w);
            dbeta += g;
        }
        if (a.gated) dw += dpre[b] * fused_u(a, p, s + (long long)b * a.ds, q + (long long)b * a.dq, st, branch_scales(a, b), k);
    }
    if (a.norm) {
        const int kk = sp ? k : k - a.ds;
        gp[(sp ? a.o_gs : a.o_gq) + kk] = dgamma;
        gp[(sp ? a.o_bs : a.o_bq) + kk] = dbeta;
    }
    if (a.gated) gp[a.o_gw + k] = dw;
}
