// Imbalance losses on logits, forward and backward in one pass, with the confusion counts
// (src/backend/loss.rs has the formulas; src/backend/cpu/loss.rs is the reference).
#include "common.cuh"

// Matches `LossArgs` in src/backend/cuda/loss.rs.
struct LossArgs {
    int focal;           // 0: BCE, 1: focal
    float alpha, gamma;  // focal only
    float w0, w1;        // class weights: real, fake
    float smoothing;
    float threshold_logit;  // "fake" where logit >= this
};

// One block, so that the sums run in a fixed order: the same loss for the same inputs, every time.
// stats[0] = mean loss, stats[1..5] = TP, FP, TN, FN (exact below 2^24 samples).
extern "C" __global__ void loss_fwd_bwd(const float* __restrict__ logits, const float* __restrict__ labels, int n,
                                        LossArgs a, float* __restrict__ dlogits, float* __restrict__ stats) {
    __shared__ float scratch[32];
    float total = 0.0f, tp = 0.0f, fp = 0.0f, tn = 0.0f, fn = 0.0f;
    const float inv_n = 1.0f / (float)n;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        const float x = logits[i], label = labels[i];
        const float y = label * (1.0f - a.smoothing) + a.smoothing * 0.5f;
        const float p = sigmoidf(x), q = sigmoidf(-x);
        const float ln_p = -softplusf(-x), ln_q = -softplusf(x);
        float f1, d1, f0, d0;
        if (a.focal) {
            const float qg = powf(q, a.gamma), pg = powf(p, a.gamma);
            f1 = -a.alpha * qg * ln_p;
            d1 = a.alpha * qg * (a.gamma * p * ln_p - q);
            f0 = -(1.0f - a.alpha) * pg * ln_q;
            d0 = (1.0f - a.alpha) * pg * (p - a.gamma * q * ln_q);
        } else {
            f1 = -ln_p; d1 = -q; f0 = -ln_q; d0 = p;
        }
        total += a.w1 * y * f1 + a.w0 * (1.0f - y) * f0;
        dlogits[i] = (a.w1 * y * d1 + a.w0 * (1.0f - y) * d0) * inv_n;
        const bool fake = label >= 0.5f, said_fake = x >= a.threshold_logit;
        tp += fake && said_fake; fp += !fake && said_fake; tn += !fake && !said_fake; fn += fake && !said_fake;
    }
    total = block_sum(total, scratch);
    tp = block_sum(tp, scratch); fp = block_sum(fp, scratch); tn = block_sum(tn, scratch); fn = block_sum(fn, scratch);
    if (threadIdx.x == 0) {
        stats[0] = total * inv_n;
        stats[1] = tp; stats[2] = fp; stats[3] = tn; stats[4] = fn;
    }
}
