// What the Rust side of the emulated device (emu/src/launch.rs) and the host-compiled kernels share: the table
// of kernels of each kernels/*.cu, and one launch. build.rs writes a table file per kernel file.
#pragma once
#include <stdint.h>

#include <type_traits>
#include <utility>

#include "cuda_host.h"

namespace emu {

// cuLaunchKernel's kernelParams: params[i] points at the value of argument i.
typedef void (*Call)(void** params);

struct KernelEntry {
    const char* name;  // nullptr ends a table
    Call call;
};

enum Order : uint32_t { ORDER_FORWARD = 0, ORDER_REVERSE = 1, ORDER_SHUFFLE = 2 };

// Matches `Launch` in emu/src/launch.rs.
struct Launch {
    const KernelEntry* entry;
    void** params;
    dim3 grid, block;
    uint32_t shared_bytes;
    uint32_t thread_order;
    uint64_t seed;
};

template <class... A, size_t... I>
void invoke_at(void (*f)(A...), void** p, std::index_sequence<I...>) {
    f(*static_cast<typename std::remove_cv<typename std::remove_reference<A>::type>::type*>(p[I])...);
}

// Calls kernel f with its arguments read from a kernelParams array, each at the type f declares.
template <class... A>
void invoke(void (*f)(A...), void** p) {
    invoke_at(f, p, std::index_sequence_for<A...>{});
}

}  // namespace emu

#define EMU_KERNEL(f) {#f, +[](void** p) { ::emu::invoke(&f, p); }}
