// Frequency features: the 2-D DFT of each image plane, then magnitude and phase planes (src/backend/fft.rs has
// the modes and layouts; src/backend/cpu/fft.rs is the reference). Two passes over device memory:
//   fft_rows:  load pixels (f32 NCHW or u8 NHWC, optionally to luma), two real rows packed as one complex row,
//              transform, unpack into the two half spectra, store H x (W/2 + 1) complex per plane;
//   fft_cols:  load columns of that, transform, and write the feature planes directly (log, phase, shift).
// A line transform runs in shared memory: Stockham passes of radix 2, 3, 4, 5, 7 for sizes made of those
// factors, Bluestein's chirp-z (a smooth-size convolution) for the rest. Many lines share a block.
#include "common.cuh"

// One 1-D transform size, planned on the host (src/backend/cuda/fft.rs, `Line`).
struct Line {
    int n;          // the transform size
    int len;        // the size actually transformed in shared memory: n, or Bluestein's m
    int nrad;       // number of radices of len, each 2, 3, 4, 5 or 7
    int bluestein;  // 1: chirp and kfft are used
    // Radix i in bits 3i..3i+2. Packed in one integer: an indexed array in a kernel parameter is copied to
    // the stack (ptxas reported a 64-byte frame), a shift is not.
    unsigned long long radices;
};

// Matches `FftArgs` in src/backend/cuda/fft.rs.
struct FftArgs {
    int n_img, c, h, w, s, out_h, out_w, planes;
    int input_u8, grayscale, layout, magnitude, phase;  // layout 0 half, 1 shifted; magnitude 0 raw, 1 log, 2 log-std; phase 0 angle, 1 cos/sin
    float inv_sqrt_hw;
};

#define LOG_EPS 1e-6f
#define LOG_CENTER -3.0f
#define LOG_SCALE 3.0f

__device__ __forceinline__ float2 cmul(float2 a, float2 b) { return make_float2(a.x * b.x - a.y * b.y, a.x * b.y + a.y * b.x); }
__device__ __forceinline__ float2 conjf2(float2 a) { return make_float2(a.x, -a.y); }
__device__ __forceinline__ float2 cis_pi(float x) {  // e^{i pi x}
    float s, c;
    sincospif(x, &s, &c);
    return make_float2(c, s);
}

// e^{-2 pi i m / R} for 0 <= m < R, from constants: with the loops below unrolled, m is known at compile time
// and this folds to two immediates (sincospif here made the fatbin five times larger).
template <int R>
__device__ __forceinline__ float2 root_of_unity(int m) {
    constexpr float c3 = -0.5f, s3 = 0.86602540378443864676f;
    constexpr float c5a = 0.30901699437494742410f, s5a = 0.95105651629515357212f;
    constexpr float c5b = -0.80901699437494742410f, s5b = 0.58778525229247312917f;
    constexpr float c7a = 0.62348980185873353053f, s7a = 0.78183148246802980871f;
    constexpr float c7b = -0.22252093395631440429f, s7b = 0.97492791218182360702f;
    constexpr float c7c = -0.90096886790241912624f, s7c = 0.43388373911755812048f;
    if (m == 0) return make_float2(1.0f, 0.0f);
    switch (R) {
        case 2: return make_float2(-1.0f, 0.0f);
        case 3: return make_float2(c3, m == 1 ? -s3 : s3);
        case 4: return m == 1 ? make_float2(0.0f, -1.0f) : m == 2 ? make_float2(-1.0f, 0.0f) : make_float2(0.0f, 1.0f);
        case 5: {
            const float c = (m == 1 || m == 4) ? c5a : c5b, sn = (m == 1 || m == 4) ? s5a : s5b;
            return make_float2(c, m <= 2 ? -sn : sn);
        }
        default: {
            const int k = m <= 3 ? m : 7 - m;
            const float c = k == 1 ? c7a : k == 2 ? c7b : c7c, sn = k == 1 ? s7a : k == 2 ? s7b : s7c;
            return make_float2(c, m <= 3 ? -sn : sn);
        }
    }
}

// One Stockham pass of radix R over `lines` lines of length L (Govindaraju et al. 2008): read x[j + q L/R],
// twiddle by e^{-2 pi i q k / (ns R)} with k = j mod ns, R-point DFT, write y[(j / ns) ns R + k + p ns].
template <int R>
__device__ void stockham_pass(const float2* __restrict__ x, float2* __restrict__ y, int L, int lines, int ns) {
    const int per_line = L / R;
    for (int t = threadIdx.x; t < lines * per_line; t += blockDim.x) {
        const int line = t / per_line, j = t - line * per_line;
        const float2* xl = x + line * L;
        float2* yl = y + line * L;
        const int k = j % ns;
        float2 v[R];
#pragma unroll
        for (int q = 0; q < R; ++q) v[q] = cmul(xl[j + q * per_line], cis_pi(-2.0f * (float)(q * k) / (float)(ns * R)));
        const int base = (j / ns) * ns * R + k;
#pragma unroll
        for (int p = 0; p < R; ++p) {
            float2 acc = v[0];
#pragma unroll
            for (int q = 1; q < R; ++q) {
                const float2 m = cmul(v[q], root_of_unity<R>((p * q) % R));
                acc.x += m.x;
                acc.y += m.y;
            }
            yl[base + p * ns] = acc;
        }
    }
}

// The DFT of length line.len of each of `lines` lines in a; b is scratch of the same size. Returns the buffer
// (a or b) that holds the result. All threads of the block must call it.
__device__ float2* fft_lines(float2* a, float2* b, const Line& line, int lines) {
    int ns = 1;
    for (int i = 0; i < line.nrad; ++i) {
        const int r = (int)((line.radices >> (3 * i)) & 7);
        switch (r) {
            case 2: stockham_pass<2>(a, b, line.len, lines, ns); break;
            case 3: stockham_pass<3>(a, b, line.len, lines, ns); break;
            case 4: stockham_pass<4>(a, b, line.len, lines, ns); break;
            case 5: stockham_pass<5>(a, b, line.len, lines, ns); break;
            default: stockham_pass<7>(a, b, line.len, lines, ns); break;
        }
        __syncthreads();
        float2* t = a; a = b; b = t;
        ns *= r;
    }
    return a;
}

// The DFT of length line.n of each line (input in the first n values of each len-long slot of a).
// Bluestein: X = chirp * IFFT_m(FFT_m(chirp * x) * kfft), with IFFT(z) = conj(FFT(conj z)) / m.
__device__ float2* transform(float2* a, float2* b, const Line& line, int lines, const float2* __restrict__ chirp,
                             const float2* __restrict__ kfft) {
    if (!line.bluestein) return fft_lines(a, b, line, lines);
    const int n = line.n, m = line.len;
    for (int t = threadIdx.x; t < lines * m; t += blockDim.x) {
        const int j = t % m;
        a[t] = j < n ? cmul(a[t], chirp[j]) : make_float2(0.0f, 0.0f);
    }
    __syncthreads();
    float2* r = fft_lines(a, b, line, lines);
    for (int t = threadIdx.x; t < lines * m; t += blockDim.x) r[t] = conjf2(cmul(r[t], kfft[t % m]));
    __syncthreads();
    r = fft_lines(r, r == a ? b : a, line, lines);
    const float inv_m = 1.0f / (float)m;
    for (int t = threadIdx.x; t < lines * m; t += blockDim.x) {
        const int j = t % m;
        if (j < n) {
            const float2 v = conjf2(r[t]);
            r[t] = cmul(make_float2(v.x * inv_m, v.y * inv_m), chirp[j]);
        }
    }
    __syncthreads();
    return r;
}

// Pixel (y, x) of channel ch of image img in [0, 1].
__device__ __forceinline__ float channel(const float* __restrict__ f32, const uint8_t* __restrict__ u8,
                                         const FftArgs& a, int img, int ch, int y, int x) {
    return a.input_u8 ? (float)u8[(((long long)img * a.h + y) * a.w + x) * a.c + ch] * (1.0f / 255.0f)
                      : f32[(((long long)img * a.c + ch) * a.h + y) * a.w + x];
}

// Pixel (y, x) of spectrum sp of image img: a channel, or the BT.601 luma.
__device__ __forceinline__ float pixel(const float* __restrict__ f32, const uint8_t* __restrict__ u8, const FftArgs& a,
                                       int img, int sp, int y, int x) {
    if (!a.grayscale) return channel(f32, u8, a, img, sp, y, x);
    return 0.299f * channel(f32, u8, a, img, 0, y, x) + 0.587f * channel(f32, u8, a, img, 1, y, x) +
           0.114f * channel(f32, u8, a, img, 2, y, x);
}

// Rows: each line is one pair of rows (y0 = 2 pair, y1 = y0 + 1) of one spectrum of one image.
extern "C" __global__ void fft_rows(const float* __restrict__ in_f32, const uint8_t* __restrict__ in_u8, FftArgs a,
                                    Line line, const float2* __restrict__ chirp, const float2* __restrict__ kfft,
                                    int lines_per_block, float2* __restrict__ spec) {
    DYNAMIC_SHARED(float2, smem);
    float2* A = smem;
    float2* B = smem + lines_per_block * line.len;
    const int pairs = (a.h + 1) / 2, wh = a.w / 2 + 1;
    const long long total = (long long)a.n_img * a.s * pairs;
    const long long first = (long long)blockIdx.x * lines_per_block;
    if (first >= total) return;
    const int lines = (int)min((long long)lines_per_block, total - first);
    for (int t = threadIdx.x; t < lines * a.w; t += blockDim.x) {
        const int l = t / a.w, x = t - l * a.w;
        const long long g = first + l;
        const int plane = (int)(g / pairs), y0 = 2 * (int)(g % pairs);
        const int img = plane / a.s, sp = plane % a.s;
        const float re = pixel(in_f32, in_u8, a, img, sp, y0, x);
        const float im = y0 + 1 < a.h ? pixel(in_f32, in_u8, a, img, sp, y0 + 1, x) : 0.0f;
        A[l * line.len + x] = make_float2(re, im);
    }
    __syncthreads();
    const float2* r = transform(A, B, line, lines, chirp, kfft);
    // Z = FA + i FB with FA, FB Hermitian: FA[k] = (Z[k] + conj Z[-k]) / 2, FB[k] = (Z[k] - conj Z[-k]) / 2i.
    for (int t = threadIdx.x; t < lines * wh; t += blockDim.x) {
        const int l = t / wh, k = t - l * wh;
        const float2 z = r[l * line.len + k], zc = conjf2(r[l * line.len + (a.w - k) % a.w]);
        const long long g = first + l;
        const long long plane = g / pairs;
        const int y0 = 2 * (int)(g % pairs);
        spec[(plane * a.h + y0) * wh + k] = make_float2(0.5f * (z.x + zc.x), 0.5f * (z.y + zc.y));
        if (y0 + 1 < a.h) spec[(plane * a.h + y0 + 1) * wh + k] = make_float2(0.5f * (z.y - zc.y), -0.5f * (z.x - zc.x));
    }
}

// The feature values of bin (ky, kx) with value v, written at its output position.
__device__ __forceinline__ void write_bin(const FftArgs& a, int img, int sp, int ky, int kx, float2 v,
                                          const float* __restrict__ stats, float* __restrict__ out) {
    const int oy = a.layout ? (ky + a.h / 2) % a.h : ky;
    const int ox = a.layout ? (kx + a.w / 2) % a.w : kx;
    const long long plane_len = (long long)a.out_h * a.out_w;
    const long long o = (long long)oy * a.out_w + ox;
    float* base = out + (long long)img * a.planes * plane_len;
    // FftDims::is_real_bin: exactly real in exact arithmetic; rounding must not flip its phase between +1 and -1.
    if ((ky == 0 || 2 * ky == a.h) && (kx == 0 || 2 * kx == a.w)) v.y = 0.0f;
    const float mag = hypotf(v.x, v.y);
    float m = mag;
    if (a.magnitude) {
        m = (logf(fmaf(mag, a.inv_sqrt_hw, LOG_EPS)) - LOG_CENTER) * (1.0f / LOG_SCALE);
        if (a.magnitude == 2) {
            const long long bin = sp * plane_len + o;
            m = (m - stats[bin]) / stats[a.s * plane_len + bin];
        }
    }
    base[sp * plane_len + o] = m;
    if (a.phase == 0) {
        base[(a.s + sp) * plane_len + o] = atan2f(v.y, v.x) * (float)M_1_PI;
    } else {
        const bool nz = mag > 0.0f;
        base[(a.s + sp) * plane_len + o] = nz ? v.x / mag : 1.0f;
        base[(2 * a.s + sp) * plane_len + o] = nz ? v.y / mag : 0.0f;
    }
}

// Columns and features: each block takes up to lines_per_block neighbouring columns kx of one plane.
extern "C" __global__ void fft_cols(const float2* __restrict__ spec, FftArgs a, Line line,
                                    const float2* __restrict__ chirp, const float2* __restrict__ kfft,
                                    int lines_per_block, const float* __restrict__ stats, float* __restrict__ out) {
    DYNAMIC_SHARED(float2, smem);
    float2* A = smem;
    float2* B = smem + lines_per_block * line.len;
    const int wh = a.w / 2 + 1;
    const int groups = (wh + lines_per_block - 1) / lines_per_block;
    const int plane = blockIdx.x / groups, kx0 = (blockIdx.x % groups) * lines_per_block;
    if (plane >= a.n_img * a.s) return;
    const int lines = min(lines_per_block, wh - kx0);
    const int img = plane / a.s, sp = plane % a.s;
    // Column index fastest: neighbouring threads read neighbouring bins of a row.
    for (int t = threadIdx.x; t < lines * a.h; t += blockDim.x) {
        const int ky = t / lines, l = t - ky * lines;
        A[l * line.len + ky] = spec[((long long)plane * a.h + ky) * wh + kx0 + l];
    }
    __syncthreads();
    const float2* r = transform(A, B, line, lines, chirp, kfft);
    for (int t = threadIdx.x; t < lines * a.h; t += blockDim.x) {
        const int ky = t / lines, l = t - ky * lines, kx = kx0 + l;
        const float2 v = r[l * line.len + ky];
        write_bin(a, img, sp, ky, kx, v, stats, out);
        // The full spectrum's other half: F[-ky][-kx] = conj F[ky][kx], for the columns past W/2.
        if (a.layout && kx >= 1 && a.w - kx > a.w / 2) write_bin(a, img, sp, (a.h - ky) % a.h, a.w - kx, conjf2(v), stats, out);
    }
}

// Per-bin statistics: Welford over the batch for each bin (one thread per bin, neighbouring bins coalesced),
// then Chan's merge into the running (count, mean, m2), in f64. Bins are the first `bins` values of each image.
extern "C" __global__ void fft_stats_update(const float* __restrict__ feats, long long per_image, int bins, int n,
                                            double count, double* __restrict__ mean, double* __restrict__ m2) {
    GRID_STRIDE(bin, bins) {
        double bm = 0.0, bm2 = 0.0;
        for (int i = 0; i < n; ++i) {
            const double x = feats[i * per_image + bin];
            const double delta = x - bm;
            bm += delta / (double)(i + 1);
            bm2 += delta * (x - bm);
        }
        const double nb = (double)n, delta = bm - mean[bin];
        mean[bin] += delta * nb / (count + nb);
        m2[bin] += bm2 + delta * delta * count * nb / (count + nb);
    }
}

// The features stage alone, from a half spectrum that someone else computed (planes x H x (W/2 + 1)): the
// second half of the cuFFT baseline in benches/fft.rs, and a cross-check of the fused kernels against cuFFT.
extern "C" __global__ void fft_features_from_spectrum(const float2* __restrict__ spec, FftArgs a,
                                                      const float* __restrict__ stats, float* __restrict__ out) {
    const int wh = a.w / 2 + 1;
    GRID_STRIDE(i, (long long)a.n_img * a.s * a.h * wh) {
        const int kx = (int)(i % wh), ky = (int)((i / wh) % a.h);
        const long long plane = i / ((long long)wh * a.h);
        const int img = (int)(plane / a.s), sp = (int)(plane % a.s);
        const float2 v = spec[i];
        write_bin(a, img, sp, ky, kx, v, stats, out);
        if (a.layout && kx >= 1 && a.w - kx > a.w / 2) write_bin(a, img, sp, (a.h - ky) % a.h, a.w - kx, conjf2(v), stats, out);
    }
}

// The ring profile (backend/fft.rs): one thread per (image, magnitude plane, ring), summing its ring's bins in
// the order `order` lists them (row-major within a ring, as the CPU reference adds them, so that both give the
// same bits); `starts` says where each ring's bins begin. Each bin of a plane is read once. With `standardize`,
// stats holds s * rings means then as many standard deviations.
extern "C" __global__ void fft_profile(const float* __restrict__ feats, int n_img, int planes, int s,
                                       long long plane_len, int rings, const unsigned* __restrict__ order,
                                       const unsigned* __restrict__ starts, int standardize,
                                       const float* __restrict__ stats, float* __restrict__ out) {
    const int k = s * rings;
    GRID_STRIDE(i, (long long)n_img * k) {
        const int r = (int)(i % rings), p = (int)((i / rings) % s);
        const long long img = i / k;
        const float* plane = feats + (img * planes + p) * plane_len;
        float sum = 0.0f;
        for (unsigned j = starts[r]; j < starts[r + 1]; ++j) sum += plane[order[j]];
        const unsigned count = starts[r + 1] - starts[r];
        float m = count > 0 ? sum / (float)count : 0.0f;
        if (standardize) {
            const int j = (int)(i % k);
            m = (m - stats[j]) / stats[k + j];
        }
        out[i] = m;
    }
}
