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
