// Image preprocessing: a u8 HWC batch (N x H x W x C, straight from the decoder) to two f32 NCHW tensors in one
// pass over memory: `norm` = (x/255 - mean[c]) / std[c] for the spatial branch, `raw` = x/255 for the frequency
// branch. The launcher folds mean/std into scale = 1/(255 std), bias = -mean/std, so norm = x * scale + bias.
#include "common.cuh"

// Any C in 1..4, one thread per pixel. `raw` may be null when only the normalized tensor is wanted.
extern "C" __global__ void preprocess_u8_hwc(const uint8_t* __restrict__ in, float* __restrict__ norm,
                                             float* __restrict__ raw, int64_t n_img, int64_t hw, int c,
                                             Chan4 scale, Chan4 bias) {
    GRID_STRIDE(i, n_img * hw) {
        const int64_t img = i / hw, p = i - img * hw;
        const uint8_t* px = in + i * c;
        // Unrolled to 4 with a guard so that scale.v[k] stays in registers (a dynamic index spills it to the stack).
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            if (k >= c) break;
            const float x = (float)px[k];
            const int64_t o = (img * c + k) * hw + p;
            norm[o] = fmaf(x, scale.v[k], bias.v[k]);
            if (raw) raw[o] = x * (1.0f / 255.0f);
        }
    }
}

// C = 3 and H*W divisible by 4: each thread takes four pixels (12 bytes, three aligned 4-byte loads) and writes
// one 16-byte store per channel and output. The usual case (RGB, even sizes), and bandwidth-bound.
extern "C" __global__ void preprocess_u8_hwc3_x4(const uint8_t* __restrict__ in, float* __restrict__ norm,
                                                 float* __restrict__ raw, int64_t n_img, int64_t hw,
                                                 Chan4 scale, Chan4 bias) {
    const int64_t quads = hw / 4;
    GRID_STRIDE(i, n_img * quads) {
        const int64_t img = i / quads, p = (i - img * quads) * 4;
        const uint32_t* w = reinterpret_cast<const uint32_t*>(in + (img * hw + p) * 3);
        const uint32_t w0 = w[0], w1 = w[1], w2 = w[2];
        // bytes: r0 g0 b0 r1 | g1 b1 r2 g2 | b2 r3 g3 b3 (little endian)
        const float b[12] = {
            (float)(w0 & 255), (float)((w0 >> 8) & 255), (float)((w0 >> 16) & 255), (float)(w0 >> 24),
            (float)(w1 & 255), (float)((w1 >> 8) & 255), (float)((w1 >> 16) & 255), (float)(w1 >> 24),
            (float)(w2 & 255), (float)((w2 >> 8) & 255), (float)((w2 >> 16) & 255), (float)(w2 >> 24)};
#pragma unroll
        for (int k = 0; k < 3; ++k) {
            const float x0 = b[k], x1 = b[3 + k], x2 = b[6 + k], x3 = b[9 + k];
            const int64_t o = (img * 3 + k) * hw + p;
            const float s = scale.v[k], t = bias.v[k];
            *reinterpret_cast<float4*>(norm + o) =
                make_float4(fmaf(x0, s, t), fmaf(x1, s, t), fmaf(x2, s, t), fmaf(x3, s, t));
            if (raw) {
                const float r = 1.0f / 255.0f;
                *reinterpret_cast<float4*>(raw + o) = make_float4(x0 * r, x1 * r, x2 * r, x3 * r);
            }
        }
    }
}
