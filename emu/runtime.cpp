// The emulated device's threads: one block at a time per OS thread, each CUDA thread a fiber with its own stack,
// switched only at __syncthreads and the warp operations, so a block runs the same way every time for a given
// thread order. Misuse that a GPU turns into a hang or garbage is reported as a launch error instead: a barrier
// that not every thread reaches, a warp operation whose mask names lanes that never arrive or do not exist.
#include <sys/mman.h>

#include <new>

#include <cstdarg>
#include <cstdio>
#include <string>
#include <vector>

#include "cuda_host.h"
#include "registry.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define EMU_ASAN 1
#endif

// emu_switch(save, next): saves the callee-saved registers on the current stack, stores the stack pointer in
// *save, and resumes the context whose stack pointer is `next`. The FP control words (MXCSR, x87) are left
// alone: no kernel changes them, so every fiber runs with its OS thread's (round to nearest, no flush to zero).
// emu_fiber_start: the first return address of a new fiber; calls r12(rbx).
extern "C" void emu_switch(void** save, void* next);
extern "C" void emu_fiber_start();
asm(R"(
    .text
    .globl emu_switch
    .hidden emu_switch
    .type emu_switch, @function
emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size emu_switch, .-emu_switch

    .globl emu_fiber_start
    .hidden emu_fiber_start
    .type emu_fiber_start, @function
emu_fiber_start:
    movq %rbx, %rdi
    callq *%r12
    ud2
    .size emu_fiber_start, .-emu_fiber_start
)");

namespace emu {

namespace {

enum State { READY, AT_BARRIER, AT_WARP, DONE, FAILED };

// A region: guard page, stack, ThreadState (cuda_host.h).
constexpr size_t STACK = REGION - PAGE - HEADER;
static_assert(sizeof(ThreadState) <= HEADER, "the ThreadState fits its header");
constexpr int MAX_THREADS = 1024;

struct Fiber {
    void* sp = nullptr;
    ThreadState* ts = nullptr;  // just above its stack
    State state = READY;
    unsigned warp_mask = 0;
    unsigned warp_ops = 0;  // warp operations done so far: their parity picks the exchange buffer
    char* stack = nullptr;  // lowest usable byte
};

// Everything one OS thread needs to run blocks; made on first use and kept (stacks are reused).
struct Runner {
    void* home_sp = nullptr;
    Fiber* running = nullptr;
    std::vector<Fiber> fibers;
    std::vector<unsigned> order;
    std::vector<uint64_t> exchange;  // [warp][parity][lane]
    std::vector<unsigned> arrived;   // [warp]: the lanes waiting at a warp operation
    std::vector<unsigned char> shared;
    BlockState block{};
    const Launch* launch = nullptr;
    std::string error;
    char* stacks = nullptr;
#if EMU_ASAN
    void* home_fake_stack = nullptr;
    const void* home_bottom = nullptr;
    size_t home_size = 0;
#endif

    Runner() : fibers(MAX_THREADS) {
        // One region more than needed, to align the first to REGION.
        void* m = mmap(nullptr, REGION * (MAX_THREADS + 1), PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (m == MAP_FAILED) {
            perror("dfgpu-emu: mmap of fiber stacks");
            abort();
        }
        stacks = reinterpret_cast<char*>((reinterpret_cast<uintptr_t>(m) + REGION - 1) & ~(REGION - 1));
        for (int i = 0; i < MAX_THREADS; i++) {
            char* region = stacks + i * REGION;
            mprotect(region, PAGE, PROT_NONE);  // a stack overflow faults instead of corrupting
            fibers[i].ts = new (region + REGION - HEADER) ThreadState{};
            fibers[i].stack = region + PAGE;
        }
    }

    void fail(const char* fmt, ...) __attribute__((format(printf, 2, 3))) {
        char buf[512];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(buf, sizeof buf, fmt, ap);
        va_end(ap);
        if (error.empty()) error = buf;
    }

    // From the scheduler into fiber f, until it yields or ends.
    void resume(Fiber* f) {
        running = f;
#if EMU_ASAN
        void* fake = nullptr;
        __sanitizer_start_switch_fiber(&fake, f->stack, STACK);
        emu_switch(&home_sp, f->sp);
        __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#else
        emu_switch(&home_sp, f->sp);
#endif
        running = nullptr;
    }

    // From the running fiber back to the scheduler; returns when the scheduler resumes it.
    void yield(State s) {
        Fiber* f = running;
        f->state = s;
#if EMU_ASAN
        void* fake = nullptr;
        __sanitizer_start_switch_fiber(&fake, home_bottom, home_size);
        emu_switch(&f->sp, home_sp);
        __sanitizer_finish_switch_fiber(fake, &home_bottom, &home_size);
#else
        emu_switch(&f->sp, home_sp);
#endif
    }

    // The running fiber's end: back to the scheduler for good. No local has its address taken here, so the
    // frame that never returns leaves no ASan redzone on the stack that the next block's fiber reuses.
    [[noreturn]] void finish() {
        running->state = DONE;
#if EMU_ASAN
        __sanitizer_start_switch_fiber(nullptr, home_bottom, home_size);  // nullptr: ASan drops its fake stack
#endif
        emu_switch(&running->sp, home_sp);
        __builtin_unreachable();
    }

    static void fiber_main(Runner* r) {
#if EMU_ASAN
        __sanitizer_finish_switch_fiber(nullptr, &r->home_bottom, &r->home_size);
#endif
        r->launch->entry->call(r->launch->params);
        r->finish();
    }

    // A fresh context on f's stack that starts in fiber_main(this).
    // A fiber that ran to its end unwound its frames, and ASan cleared their redzones on the way out: its stack
    // is reused as it is (clearing every stack for every block was most of the sanitized run's time).
    void start(Fiber* f) {
        uint64_t* top = reinterpret_cast<uint64_t*>(f->stack + STACK);
        uint64_t* sp = top - 7;  // after emu_switch's 6 pops and ret, rsp = top: 16-byte aligned for the call
        sp[0] = sp[1] = sp[2] = 0;                        // r15, r14, r13
        sp[3] = reinterpret_cast<uint64_t>(&fiber_main);  // r12
        sp[4] = reinterpret_cast<uint64_t>(this);         // rbx
        sp[5] = 0;                                        // rbp
        sp[6] = reinterpret_cast<uint64_t>(&emu_fiber_start);
        f->sp = sp;
        f->state = READY;
        f->warp_ops = 0;
    }

    unsigned nthreads() const { return launch->block.x * launch->block.y * launch->block.z; }

    // Lanes of warp w that exist in this block.
    unsigned lanes_of(unsigned w) const {
        const unsigned n = nthreads(), first = w * 32;
        const unsigned k = std::min(32u, n - first);
        return k == 32 ? 0xffffffffu : ((1u << k) - 1);
    }

    // Called when lane `lane` of warp w has arrived at a warp operation: releases the warp once every lane of
    // its mask is there, at the same operation.
    void try_release(unsigned w, unsigned lane) {
        Fiber* lanes = &fibers[w * 32];
        const unsigned mask = lanes[lane].warp_mask;
        arrived[w] |= 1u << lane;
        if ((arrived[w] & mask) != mask) return;  // not there yet (or never: the deadlock check reports it)
        for (unsigned l = 0; l < 32; l++) {
            if (!(mask >> l & 1)) continue;
            if (lanes[l].warp_mask != mask || lanes[l].warp_ops != lanes[lane].warp_ops) {
                fail("lanes of warp %u met at different warp operations (masks 0x%08x and 0x%08x)", w, mask,
                     lanes[l].warp_mask);
                return;
            }
        }
        arrived[w] &= ~mask;
        for (unsigned l = 0; l < 32; l++)
            if (mask >> l & 1) lanes[l].state = READY;
    }

    // The threads stopped and none can go on: name what each is waiting for.
    void describe_deadlock() {
        const unsigned n = nthreads();
        unsigned done = 0, barrier = 0, warp = 0;
        int first_warp = -1;
        for (unsigned i = 0; i < n; i++) {
            done += fibers[i].state == DONE;
            barrier += fibers[i].state == AT_BARRIER;
            if (fibers[i].state == AT_WARP) {
                warp++;
                if (first_warp < 0) first_warp = (int)i;
            }
        }
        if (warp) {
            const Fiber& f = fibers[first_warp];
            const unsigned w = first_warp / 32, mask = f.warp_mask;
            unsigned missing = 0;
            for (unsigned l = 0; l < 32; l++)
                if ((mask >> l & 1) && fibers[w * 32 + l].state != AT_WARP) missing |= 1u << l;
            fail("deadlock: warp %u waits at a warp operation with mask 0x%08x, but lanes 0x%08x never arrive "
                 "(%u threads exited, %u wait at __syncthreads)",
                 w, mask, missing, done, barrier);
        } else {
            fail("__syncthreads reached by %u of %u threads: the other %u had exited", barrier, n, done);
        }
    }

    bool run_block(const Launch* l, uint3 index) {
        launch = l;
        error.clear();
        const unsigned n = nthreads();
        block.grid = l->grid;
        block.block = l->block;
        block.index = index;
        block.dynamic_shared = nullptr;
        if (l->shared_bytes) {
            // Poisoned: every float a block reads before writing it is NaN.
            shared.assign(l->shared_bytes, 0xFF);
            block.dynamic_shared = shared.data();
        }
        exchange.assign(((n + 31) / 32) * 64, 0);
        arrived.assign((n + 31) / 32, 0);
        order.resize(n);
        for (unsigned i = 0; i < n; i++) order[i] = i;
        if (l->thread_order == ORDER_REVERSE) {
            std::reverse(order.begin(), order.end());
        } else if (l->thread_order == ORDER_SHUFFLE) {
            // splitmix64 of (seed, block): a different order per block, the same on every run.
            uint64_t s = l->seed ^ (((uint64_t)index.z * l->grid.y + index.y) * l->grid.x + index.x) * 0x9E3779B97F4A7C15ull;
            for (unsigned i = n; i > 1; i--) {
                s += 0x9E3779B97F4A7C15ull;
                uint64_t z = s;
                z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
                z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
                z ^= z >> 31;
                std::swap(order[i - 1], order[z % i]);
            }
        }
        for (unsigned i = 0; i < n; i++) {
            Fiber& f = fibers[i];
            f.ts->index = {i % l->block.x, (i / l->block.x) % l->block.y, i / (l->block.x * l->block.y)};
            f.ts->linear = i;
            f.ts->block = &block;
            start(&f);
        }
        for (;;) {
            bool ran = false;
            for (unsigned i : order) {
                Fiber& f = fibers[i];
                if (f.state != READY) continue;
                ran = true;
                resume(&f);
                if (!error.empty()) break;
                if (f.state == AT_WARP) try_release(i / 32, i % 32);
                if (!error.empty()) break;
            }
            if (!error.empty()) break;
            if (ran) continue;
            unsigned done = 0, barrier = 0;
            for (unsigned i = 0; i < n; i++) {
                done += fibers[i].state == DONE;
                barrier += fibers[i].state == AT_BARRIER;
            }
            if (done == n) break;
            if (barrier == n) {
                for (unsigned i = 0; i < n; i++) fibers[i].state = READY;
                continue;
            }
            describe_deadlock();
            break;
        }
#if EMU_ASAN
        if (!error.empty())  // the fibers' frames never returned: clear their redzones before the stacks are reused
            for (unsigned i = 0; i < n; i++) __asan_unpoison_memory_region(fibers[i].stack, STACK);
#endif
        return error.empty();
    }
};

thread_local Runner* runner = nullptr;

}  // namespace

void syncthreads() { runner->yield(AT_BARRIER); }

uint64_t warp_exchange(unsigned mask, uint64_t mine, int src) {
    Runner* r = runner;
    Fiber* f = r->running;
    const unsigned lane = f->ts->linear & 31, w = f->ts->linear / 32;
    const unsigned exist = r->lanes_of(w);
    if (mask & ~exist) {
        r->fail("warp operation with mask 0x%08x in a partial warp: warp %u has lanes 0x%08x only", mask, w, exist);
        r->yield(FAILED);
    }
    if (!(mask >> lane & 1)) {
        r->fail("lane %u of warp %u calls a warp operation with mask 0x%08x that leaves it out", lane, w, mask);
        r->yield(FAILED);
    }
    uint64_t* buf = &r->exchange[(w * 2 + (f->warp_ops & 1)) * 32];
    buf[lane] = mine;
    f->warp_mask = mask;
    f->warp_ops++;
    r->yield(AT_WARP);
    if (src < 0) return mine;
    if (src >= 32 || !(mask >> src & 1)) {
        r->fail("lane %u of warp %u reads lane %d, which is not in the mask 0x%08x", lane, w, src, mask);
        r->yield(FAILED);
    }
    return buf[src];
}

void* dynamic_shared() { return self()->block->dynamic_shared; }

}  // namespace emu

// Runs one block of a launch on the calling OS thread. Returns 0, or 1 with a message in `err`.
extern "C" int dfgpu_emu_run_block(const emu::Launch* l, unsigned bx, unsigned by, unsigned bz, char* err,
                                   size_t err_len) {
    if (!emu::runner) emu::runner = new emu::Runner();
    if (l->block.x * l->block.y * l->block.z > (unsigned)emu::MAX_THREADS) {
        snprintf(err, err_len, "%u threads per block: at most %d", l->block.x * l->block.y * l->block.z,
                 emu::MAX_THREADS);
        return 1;
    }
    if (emu::runner->run_block(l, {bx, by, bz})) return 0;
    snprintf(err, err_len, "block (%u,%u,%u): %s", bx, by, bz, emu::runner->error.c_str());
    return 1;
}
