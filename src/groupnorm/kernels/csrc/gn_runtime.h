/* Run-time policy of the kernels of one instruction-set level: how a call is cut into work items and shared
 * among threads, which stores it uses, and the floating-point mode its threads run in. Nothing here changes a
 * result's value: the work split depends only on the shape, never on the thread count, and partial sums are
 * combined in a fixed order (see gn_math.h).
 */
#ifndef GN_RUNTIME_H
#define GN_RUNTIME_H
#include <stdint.h>
#include <stdlib.h>

#include <type_traits>

#include "gn_api.h"
#include "gn_convert.h"
#include "gn_math.h" /* FLUSH */
#include "gn_v512.h" /* GN_AVX512 when this level has AVX-512 */

#if defined(__SSE__) || defined(__x86_64__)
#include <xmmintrin.h>
#define GN_HAVE_MXCSR 1
#endif

namespace GN_NS {

/* Flush-to-zero for the calling thread while in scope (restored after). Vector code computes both sides of
 * the activations' range clamps and one side can underflow: without FTZ each subnormal result costs a
 * microcode assist (measured 10x slower GN+SiLU). Only results that would be subnormal (< 1.2e-38) become 0;
 * inputs are read as they are (no DAZ). */
struct FtzGuard {
#ifdef GN_HAVE_MXCSR
    unsigned csr;
    FtzGuard() : csr(_mm_getcsr()) { _mm_setcsr(csr | 0x8000u); }
    ~FtzGuard() { _mm_setcsr(csr); }
#endif
};

/* A thread's scratch buffer inside a parallel region: allocated on entry, freed on exit; if the allocation
 * fails it sets *err to GN_ENOMEM (atomically: every thread may write it) and ok() is false, so the thread skips
 * its items while still reaching every barrier; the caller returns the error after the region. */
template <typename A> struct ThreadScratch {
    A *p;
    ThreadScratch(i64 n, int *err) : p((A *)malloc(sizeof(A) * (size_t)n)) {
        if (!p) {
#pragma omp atomic write
            *err = GN_ENOMEM;
        }
    }
    ~ThreadScratch() { free(p); }
    bool ok() const { return p != NULL; }
    ThreadScratch(const ThreadScratch &) = delete;
    ThreadScratch &operator=(const ThreadScratch &) = delete;
};

/* The cache sizes the blocking below is chosen from (gn_api.h: detected once, or set by gn_set_cache_sizes). */
struct Caches {
    i64 l1, l2, l3;
};
static inline Caches caches() {
    int64_t c[3];
    gn_get_cache_sizes(c);
    return Caches{c[0], c[1], c[2]};
}

/* Non-temporal stores (AVX-512 levels) for an output larger than the L2 caches of the nt threads that write it:
 * it cannot stay in their private caches, and a plain store first reads the line it writes (one more memory
 * stream; 1.27x faster on a 25 MB read+write stream). The last-level cache is not counted on: it is shared with
 * the other cores (and, on a VM, tenants), and on the AMD EPYC of docs/kernels.md (32 MiB L3) outputs of 5-13
 * MB that fit in it were 10-25% slower with plain stores (three alternating bench runs). A smaller output keeps
 * plain stores and stays in cache for the next layer (on the Sapphire Rapids VM this replaced a constant 4 MiB,
 * its two cores' L2; streaming from 1 MiB made a training step slower there). After its non-temporal stores a
 * thread fences (they are weakly ordered) before the region's closing barrier. The stores' values are the same
 * either way, so results do not depend on the thread count through this choice. */
template <typename T> static inline bool nt_output(i64 elems, int nt, const Caches &cs) {
#ifdef GN_AVX512
    return !std::is_same<T, double>::value && elems * (i64)sizeof(T) > (i64)(nt < 1 ? 1 : nt) * cs.l2;
#else
    (void)elems;
    (void)nt;
    (void)cs;
    return false;
#endif
}
/* channels-last rows take non-temporal stores only if every row starts aligned (C a multiple of 16, an aligned
 * output), so that each row streams whole vectors with no unaligned head or tail */
template <typename T> static inline bool nt_rows_ok(const T *out, i64 C) {
    return C % 16 == 0 && (uintptr_t)out % (16 * sizeof(T)) == 0;
}
static inline void store_fence(bool nt) {
#ifdef GN_HAVE_MXCSR
    if (nt) _mm_sfence();
#else
    (void)nt;
#endif
}

/* Threads for a call: at most one per work item, and one for inputs under GRAIN values (as at::parallel_for's
 * grain size), where waking the other threads costs more than the work (~2 us of fork/join on a 2-core
 * machine against ~1 us of work for a 4K-value input). torch's own GN splits any input with two or more
 * (sample, group) blocks; at the former 32768 a (2, 32, 14, 14) input (12544 values, ~5 us on one thread) ran on
 * one thread against torch's two. Results do not depend on the thread count. */
enum { GRAIN = 8192 };
static inline int nthreads_for(i64 items, int nt, i64 elems) {
    if (nt < 1 || elems < GRAIN) nt = 1;
    if ((i64)nt > items) nt = (int)(items < 1 ? 1 : items);
    return nt;
}

/* Work items [0, n) of a parallel region shared among its threads (every thread of the region calls this; no
 * barrier at the end). Calls of at most STATIC_SPLIT_MAX values split the items statically, larger ones hand
 * them out dynamically in runs of `chunk` (a thread that was descheduled on a busy machine then leaves its
 * items to the others instead of holding everyone at the next barrier). On the small inputs of bench --small
 * dynamic runs cost more than they save: the ratio ours / torch of a (2, 32, 14, 14) forward and a
 * (32, 128, 4, 4) backward was 1.11 and 1.28 with a static split, 1.26 and 1.42 with dynamic runs of half
 * the items each (medians of 6-8 alternating processes, 2 threads, Xeon model 207). */
enum { STATIC_SPLIT_MAX = 1 << 18 };
template <typename F> static GN_INLINE void share_items(i64 n, i64 chunk, i64 elems, F body) {
    if (elems <= STATIC_SPLIT_MAX) {
#pragma omp for schedule(static) nowait
        for (i64 i = 0; i < n; ++i) body(i);
    } else {
#pragma omp for schedule(dynamic, chunk) nowait
        for (i64 i = 0; i < n; ++i) body(i);
    }
}

/* nch consecutive channels of S values (coefficients per channel, from index 0): one run through gn_v512.h's
 * rows_apply / rows_dx where a channel is not whole vectors and a vector spans at most two channels (S >= 16,
 * S % 16 != 0: 7x7 and 14x14 maps), else channel by channel (runs of whole vectors measured a little faster
 * channel by channel: no per-vector channel bookkeeping). */
static inline bool ncs_rows_flat(i64 S) { return S >= 16 && S % 16 != 0; }

/* Contiguous layout: how a call's N * G (sample, group) blocks of group_len values are cut and shared out.
 * - batch: blocks taken at a time (the statistics or sums of all of them, then their outputs; gn_fwd_ncs.h,
 *   gn_bwd_ncs.h), so that short blocks' dependency chains overlap: up to NCS_BATCH_MAX for blocks of up to 512
 *   values, 1 from 2048 on (a long block's chain is hidden inside it, and its second read should come from L1 /
 *   L2 right after the first);
 * - chunk: batches per dynamic run (share_items), ~16K values, so that tiny groups (7x7 maps, few channels per
 *   group) do not pay the scheduler once per group.
 * Both at most a thread's share of the blocks (rounded up), so that every thread gets work: a (2, 32, 14, 14)
 * input (64 blocks of 196 values) was one run of 83 blocks, done by one thread while the other was woken for
 * nothing. */
enum { NCS_BATCH_MAX = 8 };
struct NcsBatches {
    i64 batch, count, chunk; /* blocks per batch, batches, batches per dynamic run */
};
static inline NcsBatches ncs_batches(i64 group_len, i64 items, int nt) {
    const i64 len = group_len > 0 ? group_len : 1, threads = nt > 1 ? nt : 1;
    const i64 share = (items + threads - 1) / threads;
    auto clamp = [](i64 v, i64 lo, i64 hi) { return v < lo ? lo : (v > hi ? hi : v); };
    NcsBatches p;
    p.batch = clamp((i64)4096 / len < share ? (i64)4096 / len : share, 1, NCS_BATCH_MAX);
    p.count = (items + p.batch - 1) / p.batch;
    const i64 blocks_per_run = clamp((i64)16384 / len < share ? (i64)16384 / len : share, 1, items > 0 ? items : 1);
    p.chunk = (blocks_per_run + p.batch - 1) / p.batch;
    return p;
}

/* Channels-last layout. A sample's S rows are cut into K chunks of R rows (R a multiple of FLUSH, so each chunk
 * is whole FLUSH blocks but the last), and each channel's shifted sums are accumulated per chunk and the
 * chunks' sums added in chunk order: the arithmetic depends only on (S, C, the dtype, the L2 size), never on the
 * thread count or on the schedule below. R: a chunk of about L2 / 2 bytes (the per-channel accumulators and the
 * next rows also sit in L2), at least FLUSH rows: fewer chunks cost less per-chunk work (measured on the AMD
 * EPYC of docs/kernels.md: 1 MiB L2, chunks of L2 / 16, / 4 and whole samples, one thread: each larger step
 * 2-15% faster), but at most about S / 8 rows (rounded up to FLUSH), so that a single sample still gives the
 * threads several items (a (1, 1280, 16, 16) bfloat16 sample would otherwise be one chunk: one thread). */
static inline i64 nsc_rows_per_chunk(i64 S, i64 C, i64 elem, const Caches &cs) {
    const i64 row = C * elem > 0 ? C * elem : 1;
    i64 r = cs.l2 / 2 / row;
    const i64 eighth = (S + 7) / 8;
    r = r < eighth ? r : eighth;
    r = (r + FLUSH - 1) / FLUSH * FLUSH;
    if (r < FLUSH) r = FLUSH;
    return r < S ? r : S;
}

/* Schedules (forward and backward): with many samples (N >= 4 * threads) each thread takes whole samples
 * (sums, then output: no barrier at all; the second read of a sample comes from L2 or L3); otherwise chunks of
 * all samples are shared out in three phases with two barriers (sums, per-sample reduction, output). Items are
 * shared by share_items: statically for small calls, so that a thread takes the same samples call after call
 * and finds them (and the output it wrote) in its own L2 (with dynamic items the channels-last backward of
 * (8, 256, 7, 7) and (32, 128, 4, 4) ran at 0.78x and 0.68x torch's speed on 2 threads, statically 1.12x and
 * 1.18x; medians of 4 alternating processes, Xeon model 207); in dynamic runs for large ones, where a thread
 * that was descheduled (a busy machine) hands its remaining items to the others instead of holding everyone at
 * the next barrier. (Tiles of a sample's channels sized to fit L2,
 * so that the second read comes from L2, were tried: they read each row's tile at a stride of C, and were
 * 5-40% slower than whole rows on the AMD EPYC of docs/kernels.md, where the second read from L3 is cheap.) */
struct NscPlan {
    i64 N, C, S, G, D, R, K; /* K chunks of R rows per sample */
    int per_sample, nt;
    bool nts; /* non-temporal stores for the output rows (set by the caller) */
};
static inline NscPlan nsc_plan(i64 N, i64 C, i64 S, i64 G, i64 elem, int nt, const Caches &cs) {
    NscPlan p;
    p.N = N; p.C = C; p.S = S; p.G = G; p.D = C / G;
    p.R = nsc_rows_per_chunk(S, C, elem, cs);
    p.K = (S + p.R - 1) / p.R;
    p.per_sample = N >= 4 * (i64)(nt < 1 ? 1 : nt);
    p.nt = nthreads_for(p.per_sample ? N : N * p.K, nt, N * C * S);
    p.nts = false;
    return p;
}

}  // namespace GN_NS
#endif
