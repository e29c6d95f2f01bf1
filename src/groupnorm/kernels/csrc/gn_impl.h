/* GroupNorm forward / backward kernels, templated on dtype, layout and fused activation.
 *
 * This file is compiled once per instruction-set level: each gn_isa_*.cpp defines GN_NS (a namespace name)
 * and includes it; the build passes that file its -march flags and gn_dispatch.cpp picks the level at run
 * time. The code is plain C++ written so that the compiler's vectorizer handles the inner loops (fixed-width
 * lane arrays for reductions, branch-free activations, our own vectorizable exp / erf for float).
 *
 * Numerics:
 *  - statistics use shifted sums: d = x - K with K one value of the data (per group for NCS, per channel for
 *    NSC), accumulated in float lanes for at most FLUSH elements per lane, then folded into double sums;
 *    per-channel results are combined exactly (Chan et al.) in double. So float32 input with mean 1e6 keeps
 *    ~1e-6 relative accuracy, and the result does not depend on the thread count (the work split into
 *    chunks depends only on the shape, and partial sums are combined in a fixed order).
 *  - the normalization is applied as (x - mf) * a + bb with mf the mean rounded to the compute type and the
 *    rounding error folded into bb in double, so large means do not cancel.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include <type_traits>

#include "gn_api.h"

#if defined(__SSE__) || defined(__x86_64__)
#include <xmmintrin.h>
#define GN_HAVE_MXCSR 1
#endif
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512DQ__)
#include <immintrin.h>
#define GN_AVX512 1 /* hand-written AVX-512 versions of the inner loops below (gn_v512.h) */
#endif

#ifndef GN_NS
#error "define GN_NS before including gn_impl.h"
#endif

namespace GN_NS {

typedef int64_t i64;

struct bf16_t { uint16_t v; };
struct f16_t { uint16_t v; };

/* ---------------------------------------------------------------- loads and stores */
static inline float bits_to_float(uint32_t u) { float f; __builtin_memcpy(&f, &u, 4); return f; }
static inline uint32_t float_to_bits(float f) { uint32_t u; __builtin_memcpy(&u, &f, 4); return u; }

static inline float ld(const float *p) { return *p; }
static inline double ld(const double *p) { return *p; }
static inline float ld(const bf16_t *p) { return bits_to_float((uint32_t)p->v << 16); }
static inline void st(float *p, float v) { *p = v; }
static inline void st(double *p, double v) { *p = v; }
static inline void st(bf16_t *p, float v) {
    uint32_t u = float_to_bits(v);
    uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;   /* round to nearest even */
    uint32_t q = (u >> 16) | 0x40u;                          /* NaN stays a (quiet) NaN */
    p->v = (uint16_t)(((u & 0x7fffffffu) > 0x7f800000u) ? q : r);
}
/* IEEE half <-> float with integer / float arithmetic only and no branches (so the loops vectorize on every
 * instruction-set level; GCC 12 does not vectorize _Float16 conversions without AVX512-FP16). */
static inline float ld(const f16_t *p) {
    const uint32_t h = p->v, em = h & 0x7fffu, sign = (h & 0x8000u) << 16;
    /* normal and subnormal halves: shift into a float's bit positions, then rescale the exponent by 2^112 */
    const uint32_t fin = float_to_bits(bits_to_float(em << 13) * 5.192296858534828e+33f);
    const uint32_t inf_nan = 0x7f800000u | ((em & 0x3ffu) << 13);
    return bits_to_float((em >= 0x7c00u ? inf_nan : fin) | sign);
}
static inline void st(f16_t *p, float v) {  /* round to nearest even (F. Giesen's float_to_half_fast3_rtne) */
    const uint32_t u = float_to_bits(v), sign = u & 0x80000000u, f = u ^ sign;
    const uint32_t o_inf = f > 0x7f800000u ? 0x7e00u : 0x7c00u;                    /* NaN stays NaN */
    const uint32_t o_den = float_to_bits(bits_to_float(f) + 0.5f) - 0x3f000000u;   /* |v| < 2^-14 */
    const uint32_t o_norm = (f - (112u << 23) + 0xfffu + ((f >> 13) & 1u)) >> 13;
    const uint32_t o = f >= 0x47800000u ? o_inf : (f < 0x38800000u ? o_den : o_norm);
    p->v = (uint16_t)(o | (sign >> 16));
}

/* v rounded to T's precision: what a store to T and a load back give (float / double: v itself). */
template <typename T, typename A> static inline A round_to(A v) {
    T t;
    st(&t, v);
    return ld(&t);
}

/* Compute type: float for fp32 / bf16 / fp16, double for fp64. */
template <typename T> struct Acc { typedef float type; };
template <> struct Acc<double> { typedef double type; };

/* ---------------------------------------------------------------- activations */
/* exp for float, vectorizable (Cephes polynomial, ~1 ulp on the clamped range [-87, 87]). */
static inline float gn_expf(float x) {
    x = x < -87.0f ? -87.0f : x;
    x = x > 87.0f ? 87.0f : x;
    const float magic = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    float t = x * 1.44269504088896341f + magic;
    float n = t - magic;
    int32_t ni = (int32_t)(float_to_bits(t) - float_to_bits(magic));
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    return p * bits_to_float((uint32_t)(ni + 127) << 23);
}
/* erf for float, vectorizable (Abramowitz & Stegun 7.1.26, |error| <= 1.5e-7). */
static inline float gn_erff(float x) {
    float ax = fabsf(x);
    float t = 1.0f / (1.0f + 0.3275911f * ax);
    float p = 1.061405429f;
    p = p * t - 1.453152027f;
    p = p * t + 1.421413741f;
    p = p * t - 0.284496736f;
    p = p * t + 0.254829592f;
    float y = 1.0f - p * t * gn_expf(-ax * ax);
    return copysignf(y, x);
}
static inline float gexp(float x) { return gn_expf(x); }
static inline double gexp(double x) { return exp(x); }
static inline float gerf(float x) { return gn_erff(x); }
static inline double gerf(double x) { return erf(x); }

/* sigmoid(v) = 1 / (1 + exp(-v)) with exp's input clamped to [-87, 87]: 1 + e stays a normal number whose
 * reciprocal is normal too (>= 1.6e-38), so nothing produces a subnormal (a division v / (1 + exp(88)) did:
 * microcode assists, 10x slower); the result is multiplied, never divided, into v. */
static inline float gsigmoid(float v) { return 1.0f / (1.0f + gn_expf(-v)); }
static inline double gsigmoid(double v) { return 1.0 / (1.0 + exp(-v)); }

/* act(v) */
template <int ACT, typename A> static inline A act_f(A v) {
    if (ACT == GN_ACT_RELU) return v < (A)0 ? (A)0 : v;  /* NaN passes through */
    if (ACT == GN_ACT_SILU) return v / ((A)1 + gexp(-v));
    if (ACT == GN_ACT_GELU) return (A)0.5 * v * ((A)1 + gerf(v * (A)0.70710678118654752440));
    return v;
}
/* g * act'(v) */
template <int ACT, typename A> static inline A act_b(A v, A g) {
    if (ACT == GN_ACT_RELU) return v > (A)0 ? g : (A)0;
    if (ACT == GN_ACT_SILU) {
        A s = gsigmoid(v);
        return g * (s * ((A)1 + v * ((A)1 - s)));
    }
    if (ACT == GN_ACT_GELU) {
        A cdf = (A)0.5 * ((A)1 + gerf(v * (A)0.70710678118654752440));
        A pdf = (A)0.39894228040143267794 * gexp((A)-0.5 * v * v);
        return g * (cdf + v * pdf);
    }
    return g;
}

/* ---------------------------------------------------------------- helpers */
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

enum { FLUSH = 64 };    /* channels-last: rows summed in the compute type before folding into double */
#define GN_R __restrict

/* Non-temporal stores for outputs of NT_BYTES or more (AVX-512 levels): a plain store first reads the line it
 * writes, one more memory stream; measured here on a 25 MB read+write stream, 1.27x faster. Smaller outputs
 * keep plain stores (they stay in cache for whatever reads them next). After its non-temporal stores a thread
 * fences (they are weakly ordered) before the region's closing barrier. */
enum { NT_BYTES = 4 << 20 }; /* 4 MiB: two cores' L2 here; 8 MiB was tried: mid-size outputs (5-7 MB) were 1.3-1.7x faster at 4 */
template <typename T> static inline bool nt_output(i64 elems) {
#ifdef GN_AVX512
    return !std::is_same<T, double>::value && elems * (i64)sizeof(T) >= (i64)NT_BYTES;
#else
    (void)elems;
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
 * machine against ~1 us of work for a 4K-value input). Results do not depend on the thread count. */
enum { GRAIN = 32768 };
static inline int nthreads_for(i64 items, int nt, i64 elems) {
    if (nt < 1 || elems < GRAIN) nt = 1;
    if ((i64)nt > items) nt = (int)(items < 1 ? 1 : items);
    return nt;
}

#ifdef GN_AVX512
#include "gn_v512.h"
#endif

/* Two sums over i in [0, L) of the terms (p_i, q_i) that f(i, p, q) computes, for a contiguous run.
 * The terms go into fixed arrays of LW lanes in the compute type (two sets of lanes, so two independent
 * dependency chains per sum; the compiler maps a set to one AVX-512 register, two AVX2 or four SSE ones), the
 * lanes are folded into LW double lanes every BLK values, and the double lanes are summed pairwise in a fixed
 * tree at the end. The order of operations depends only on L: the same on every instruction-set level and for
 * any thread count. (An `omp simd` reduction was tried first: GCC combines its lanes one scalar add at a time,
 * ~130 cycles per block, which cost more than the block itself on 7x7 maps.) */
enum { BLK = 256, LW = 16 };
template <typename A, typename F>
static inline void lane_sums(i64 L, F f, double *s1o, double *s2o) {
    double D1[LW], D2[LW];
    for (int j = 0; j < LW; ++j) { D1[j] = 0.0; D2[j] = 0.0; }
    for (i64 i0 = 0; i0 < L; i0 += BLK) {
        const i64 i1 = i0 + BLK < L ? i0 + BLK : L;
        A p1[LW], p2[LW], q1[LW], q2[LW];
        for (int j = 0; j < LW; ++j) { p1[j] = 0; p2[j] = 0; q1[j] = 0; q2[j] = 0; }
        i64 i = i0;
        for (; i + 2 * LW <= i1; i += 2 * LW) {
#pragma omp simd
            for (int j = 0; j < LW; ++j) { A u, v; f(i + j, u, v); p1[j] += u; p2[j] += v; }
#pragma omp simd
            for (int j = 0; j < LW; ++j) { A u, v; f(i + LW + j, u, v); q1[j] += u; q2[j] += v; }
        }
        if (i + LW <= i1) {
#pragma omp simd
            for (int j = 0; j < LW; ++j) { A u, v; f(i + j, u, v); p1[j] += u; p2[j] += v; }
            i += LW;
        }
        const int rem = (int)(i1 - i); /* < LW */
        for (int j = 0; j < rem; ++j) { A u, v; f(i + j, u, v); q1[j] += u; q2[j] += v; }
#pragma omp simd
        for (int j = 0; j < LW; ++j) {
            D1[j] += (double)p1[j] + (double)q1[j];
            D2[j] += (double)p2[j] + (double)q2[j];
        }
    }
    for (int w = LW / 2; w >= 1; w /= 2)
        for (int j = 0; j < w; ++j) { D1[j] += D1[j + w]; D2[j] += D2[j + w]; }
    *s1o = D1[0];
    *s2o = D2[0];
}

/* Sum of d and d*d, d = x[i] - K, over a contiguous run (lane_sums). */
template <typename T, typename A>
static void shifted_sums(const T *GN_R x, i64 L, A K, double *s1o, double *s2o) {
#ifdef GN_AVX512
    if constexpr (std::is_same<A, float>::value) return v512::shifted_sums<T>(x, L, K, s1o, s2o);
#endif
    lane_sums<A>(L, [=](i64 i, A &u, A &v) { const A d = ld(x + i) - K; u = d; v = d * d; }, s1o, s2o);
}

/* Turn (mean in double) into the compute-type mean mf and the correction delta = mean - mf. */
template <typename A> static inline A round_mean(double mean, double *delta) {
    A mf = (A)mean;
    *delta = mean - (double)mf;
    return mf;
}

/* Coefficients of the affine map v = (x - mf) * a + bb for channels c0 .. c0 + n - 1 of one (sample, group)
 * with mean / rstd (mf = round_mean(mean), the same for the whole group): a[j] = rstd * w, bb[j] = b - delta *
 * a[j] with delta = mean - mf folded in double, and al[j] = rstd * w (for dx) if al is not null. One loop
 * over channels that the compiler vectorizes (channel by channel, this setup cost as much as a 7x7 channel's
 * own values). */
template <typename T, typename A>
static inline void channel_coefs(double mean, double rstd, const T *w, const T *b, i64 c0, i64 n, A *GN_R a,
                                 A *GN_R bb, A *GN_R al) {
    double delta;
    (void)round_mean<A>(mean, &delta);
    for (i64 j = 0; j < n; ++j) {
        const double wc = w ? (double)ld(w + c0 + j) : 1.0, bc = b ? (double)ld(b + c0 + j) : 0.0;
        const double ad = rstd * wc;
        a[j] = (A)ad;
        bb[j] = (A)(bc - delta * ad);
        if (al) al[j] = (A)(rstd * wc);
    }
}
enum { CBLK = 256 }; /* channels whose coefficients are computed at once (on the stack) */

/* Sum over j in [0, n) of f(j) in double, as 8 interleaved partial sums added pairwise at the end: an order that
 * depends only on n (so results do not depend on the thread count), and 8 independent chains of adds instead
 * of one (the loops over a group's channels were bound by the latency of one scalar add per channel). */
template <typename F> static inline double sum8(i64 n, F f) {
    double p[8] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
    i64 j = 0;
    for (; j + 8 <= n; j += 8)
        for (int l = 0; l < 8; ++l) p[l] += f(j + l);
    for (int l = 0; j + l < n; ++l) p[l] += f(j + l);
    return ((p[0] + p[1]) + (p[2] + p[3])) + ((p[4] + p[5]) + (p[6] + p[7]));
}

/* Inner loops over the C channels of one row, with restrict-qualified arguments: for fp32 every array is a
 * float*, and without restrict the compiler gives up the run-time alias checks and leaves the loop scalar. */
template <typename T, typename A>
static inline void nsc_row_sums(const T *GN_R row, const A *GN_R K, A *GN_R f1, A *GN_R f2, i64 C) {
    for (i64 c = 0; c < C; ++c) {
        A d = ld(row + c) - K[c];
        f1[c] += d;
        f2[c] += d * d;
    }
}
/* Four consecutive rows (stride C) at once: the per-channel sums are loaded and stored once per four rows
 * instead of once per row (the loop was bound by those loads and stores); the four terms are added pairwise
 * first, an order that depends only on the shape. */
template <typename T, typename A>
static inline void nsc_row4_sums(const T *GN_R row, const A *GN_R K, A *GN_R f1, A *GN_R f2, i64 C) {
#ifdef GN_AVX512
    if constexpr (std::is_same<A, float>::value) return v512::nsc_row4_sums<T>(row, K, f1, f2, C);
#endif
    for (i64 c = 0; c < C; ++c) {
        const A k = K[c];
        const A d0 = ld(row + c) - k, d1 = ld(row + C + c) - k, d2 = ld(row + 2 * C + c) - k,
                d3 = ld(row + 3 * C + c) - k;
        f1[c] += (d0 + d1) + (d2 + d3);
        f2[c] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3);
    }
}
/* RES (here and below): with a residual r added before the activation, v = (x - mf) * a + bb + r; the backward
 * rows then store dv (rounded to T, the value their sums use) to dr, and the dx pass reads dv from there. */
template <typename T, typename A, int ACT, bool RES>
static inline void nsc_row_apply(const T *GN_R xr, const T *GN_R rr, const A *GN_R mf, const A *GN_R a,
                                 const A *GN_R bb, T *GN_R yr, i64 C, bool nt) {
#ifdef GN_AVX512
    if constexpr (std::is_same<A, float>::value) return v512::nsc_row_apply<T, ACT, RES>(xr, rr, mf, a, bb, yr, C, nt);
#endif
    (void)nt;
    for (i64 c = 0; c < C; ++c) {
        A v = (ld(xr + c) - mf[c]) * a[c] + bb[c];
        if (RES) v += ld(rr + c);
        st(yr + c, act_f<ACT, A>(v));
    }
}
template <typename T, typename A, int ACT, bool RES>
static inline void nsc_row_bwd_sums(const T *GN_R xr, const T *GN_R gr, const T *GN_R rr, T *GN_R dr,
                                    const A *GN_R mf, const A *GN_R a, const A *GN_R bb, A *GN_R f1, A *GN_R f2,
                                    i64 C) {
    for (i64 c = 0; c < C; ++c) {
        A xc = ld(xr + c) - mf[c];
        A pre = xc * a[c] + bb[c];
        if (RES) pre += ld(rr + c);
        A g = act_b<ACT, A>(pre, ld(gr + c));
        if (RES) {
            g = round_to<T, A>(g);
            st(dr + c, g);
        }
        f1[c] += g;
        f2[c] += g * xc;
    }
}
template <typename T, typename A, int ACT, bool RES>
static inline void nsc_row4_bwd_sums(const T *GN_R xr, const T *GN_R gr, const T *GN_R rr, T *GN_R dr,
                                     const A *GN_R mf, const A *GN_R a, const A *GN_R bb, A *GN_R f1, A *GN_R f2,
                                     i64 C) {
#ifdef GN_AVX512
    if constexpr (std::is_same<A, float>::value)
        return v512::nsc_row4_bwd_sums<T, ACT, RES>(xr, gr, rr, dr, mf, a, bb, f1, f2, C);
#endif
    for (i64 c = 0; c < C; ++c) {
        const A m = mf[c], ac = a[c], b = bb[c];
        const A x0 = ld(xr + c) - m, x1 = ld(xr + C + c) - m, x2 = ld(xr + 2 * C + c) - m, x3 = ld(xr + 3 * C + c) - m;
        A p0 = x0 * ac + b, p1 = x1 * ac + b, p2 = x2 * ac + b, p3 = x3 * ac + b;
        if (RES) {
            p0 += ld(rr + c);
            p1 += ld(rr + C + c);
            p2 += ld(rr + 2 * C + c);
            p3 += ld(rr + 3 * C + c);
        }
        A g0 = act_b<ACT, A>(p0, ld(gr + c)), g1 = act_b<ACT, A>(p1, ld(gr + C + c)),
          g2 = act_b<ACT, A>(p2, ld(gr + 2 * C + c)), g3 = act_b<ACT, A>(p3, ld(gr + 3 * C + c));
        if (RES) {
            g0 = round_to<T, A>(g0);
            g1 = round_to<T, A>(g1);
            g2 = round_to<T, A>(g2);
            g3 = round_to<T, A>(g3);
            st(dr + c, g0);
            st(dr + C + c, g1);
            st(dr + 2 * C + c, g2);
            st(dr + 3 * C + c, g3);
        }
        f1[c] += (g0 + g1) + (g2 + g3);
        f2[c] += (g0 * x0 + g1 * x1) + (g2 * x2 + g3 * x3);
    }
}
template <typename T, typename A, int ACT>
static inline void nsc_row_dx(const T *GN_R xr, const T *GN_R gr, const A *GN_R mf, const A *GN_R a,
                              const A *GN_R bb, const A *GN_R al, const A *GN_R k1, const A *GN_R k2, T *GN_R o,
                              i64 C, bool nt) {
#ifdef GN_AVX512
    if constexpr (std::is_same<A, float>::value)
        return v512::nsc_row_dx<T, ACT>(xr, gr, mf, a, bb, al, k1, k2, o, C, nt);
#endif
    (void)nt;
    for (i64 c = 0; c < C; ++c) {
        A xc = ld(xr + c) - mf[c];
        A g = act_b<ACT, A>(xc * a[c] + bb[c], ld(gr + c));
        st(o + c, al[c] * g + xc * k1[c] + k2[c]);
    }
}
/* Contiguous rows: v = (x - mf) * a + bb [+ r] over one channel's S values. */
template <typename T, typename A, int ACT, bool RES>
static inline void ncs_row_apply(const T *GN_R xr, const T *GN_R rr, T *GN_R yr, i64 S, A mf, A a, A bb, bool nt) {
#ifdef GN_AVX512
    if constexpr (std::is_same<A, float>::value) return v512::row_apply<T, ACT, RES>(xr, rr, yr, S, mf, a, bb, nt);
#endif
    (void)nt;
    for (i64 s = 0; s < S; ++s) {
        A v = (ld(xr + s) - mf) * a + bb;
        if (RES) v += ld(rr + s);
        st(yr + s, act_f<ACT, A>(v));
    }
}
template <typename T, typename A, int ACT>
static inline void ncs_row_dx(const T *GN_R xr, const T *GN_R gr, T *GN_R o, i64 S, A mf, A a, A bb, A al, A k1,
                              A k2, bool nt) {
#ifdef GN_AVX512
    if constexpr (std::is_same<A, float>::value) return v512::row_dx<T, ACT>(xr, gr, o, S, mf, a, bb, al, k1, k2, nt);
#endif
    (void)nt;
    for (i64 s = 0; s < S; ++s) {
        A xc = ld(xr + s) - mf;
        A g = act_b<ACT, A>(xc * a + bb, ld(gr + s));
        st(o + s, al * g + xc * k1 + k2);
    }
}

/* nch consecutive channels of S values (coefficients per channel, from index 0): one run through gn_v512.h's
 * rows_apply / rows_dx where a channel is not whole vectors and a vector spans at most two channels (S >= 16,
 * S % 16 != 0: 7x7 and 14x14 maps), else channel by channel (runs of whole vectors measured a little faster
 * channel by channel: no per-vector channel bookkeeping). */
static inline bool ncs_rows_flat(i64 S) { return S >= 16 && S % 16 != 0; }
template <typename T, typename A, int ACT, bool RES>
static inline void ncs_rows_apply(const T *xr, const T *rr, T *yr, i64 nch, i64 S, A mf, const A *a, const A *bb,
                                  bool nt) {
#ifdef GN_AVX512
    if constexpr (std::is_same<A, float>::value)
        if (ncs_rows_flat(S)) return v512::rows_apply<T, ACT, RES>(xr, rr, yr, nch, S, mf, a, bb, nt);
#endif
    for (i64 j = 0; j < nch; ++j)
        ncs_row_apply<T, A, ACT, RES>(xr + j * S, RES ? rr + j * S : nullptr, yr + j * S, S, mf, a[j], bb[j], nt);
}
template <typename T, typename A, int ACT>
static inline void ncs_rows_dx(const T *xr, const T *gr, T *o, i64 nch, i64 S, A mf, const A *a, const A *bb,
                               const A *al, A k1, A k2, bool nt) {
#ifdef GN_AVX512
    if constexpr (std::is_same<A, float>::value)
        if (ncs_rows_flat(S)) return v512::rows_dx<T, ACT>(xr, gr, o, nch, S, mf, a, bb, al, k1, k2, nt);
#endif
    for (i64 j = 0; j < nch; ++j)
        ncs_row_dx<T, A, ACT>(xr + j * S, gr + j * S, o + j * S, S, mf, a[j], bb[j], al[j], k1, k2, nt);
}

/* Contiguous layout: (sample, group) blocks are handed out dynamically in runs of ~16K values, so that tiny
 * groups (7x7 maps, few channels per group) do not pay the scheduler once per group. */
static inline i64 ncs_items_per_chunk(i64 group_len) {
    i64 c = (i64)16384 / (group_len > 0 ? group_len : 1);
    return c < 1 ? 1 : c;
}

/* ================================================================ forward, NCS (contiguous) */
template <typename T, int ACT>
static int fwd_ncs(i64 N, i64 C, i64 S, i64 G, const T *x, const T *w, const T *b, const T *r, double eps, T *y,
                   double *mean, double *rstd, int nt) {
    typedef typename Acc<T>::type A;
    const i64 D = C / G, L = D * S, items = N * G;
    nt = nthreads_for(items, nt, N * C * S);
    const i64 chunk = ncs_items_per_chunk(L);
    const bool nts = nt_output<T>(N * C * S);
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
    FtzGuard ftz;
#pragma omp for schedule(dynamic, chunk)
    for (i64 it = 0; it < items; ++it) {
        const i64 n = it / G, g = it % G;
        const T *xg = x + (n * C + g * D) * S;
        T *yg = y + (n * C + g * D) * S;
        const A K = ld(xg);
        double s1, s2;
        shifted_sums<T, A>(xg, L, K, &s1, &s2);
        const double m1 = s1 / (double)L;
        double var = s2 / (double)L - m1 * m1;
        if (!(var > 0.0)) var = var != var ? var : 0.0;
        const double mu = (double)K + m1, rs = 1.0 / sqrt(var + eps);
        mean[it] = mu;
        rstd[it] = rs;
        double delta;
        const A mf = round_mean<A>(mu, &delta);
        for (i64 cb = 0; cb < D; cb += CBLK) {
            const i64 nb = D - cb < CBLK ? D - cb : CBLK;
            A ca[CBLK], cbb[CBLK];
            channel_coefs<T, A>(mu, rs, w, b, g * D + cb, nb, ca, cbb, (A *)nullptr);
            const i64 o = cb * S;
            if (r)
                ncs_rows_apply<T, A, ACT, true>(xg + o, r + (n * C + g * D) * S + o, yg + o, nb, S, mf, ca, cbb, nts);
            else
                ncs_rows_apply<T, A, ACT, false>(xg + o, nullptr, yg + o, nb, S, mf, ca, cbb, nts);
        }
    }
    store_fence(nts);
    }
    return GN_OK;
}

/* ================================================================ channels-last helpers */
/* Rows of a sample are cut into chunks of a size that depends only on (S, C), never on the thread count, and
 * partial sums are combined in chunk order: results are bitwise the same for any number of threads and for
 * both schedules below. Schedules: with many samples (N >= 4 * threads) each thread takes whole samples
 * (stats, then apply: no barrier at all); otherwise chunks of all samples are shared out dynamically in three
 * phases with two barriers. Dynamic scheduling lets a thread that was descheduled (a busy machine) hand its
 * remaining items to the others instead of holding everyone at the next barrier. */
static inline i64 nsc_rows_per_chunk(i64 S, i64 C) {
    /* ~64K values per chunk: the per-chunk work over C (shift, zeroing, folding into double) stays small
     * next to the rows, and a sample of a UNet / ResNet activation still gives ~10-20 chunks to share out */
    i64 r = ((i64)65536 + C - 1) / (C > 0 ? C : 1);
    if (r < 1) r = 1;
    if (r > S) r = S;
    return r;
}

struct NscPlan {
    i64 N, C, S, G, D, R, K; /* K chunks of R rows per sample */
    int per_sample, nt;
    bool nts; /* non-temporal stores for the output rows (set by the caller) */
};
static inline NscPlan nsc_plan(i64 N, i64 C, i64 S, i64 G, int nt) {
    NscPlan p;
    p.N = N; p.C = C; p.S = S; p.G = G; p.D = C / G;
    p.R = nsc_rows_per_chunk(S, C);
    p.K = (S + p.R - 1) / p.R;
    p.per_sample = N >= 4 * (i64)(nt < 1 ? 1 : nt);
    p.nt = nthreads_for(p.per_sample ? N : N * p.K, nt, N * C * S);
    p.nts = false;
    return p;
}

/* Per-channel shifted sums of chunk k of sample n into part[(n*K + k)][2][C]; scratch has 3 * C values. */
template <typename T, typename A>
static void nsc_stats_chunk(const NscPlan &P, const T *x, i64 n, i64 k, A *scratch, double *part) {
    const i64 C = P.C, r0 = k * P.R, r1 = r0 + P.R < P.S ? r0 + P.R : P.S;
    const T *xn = x + n * P.S * C;
    A *K = scratch, *f1 = scratch + C, *f2 = scratch + 2 * C;
    double *d1 = part + (n * P.K + k) * 2 * C, *d2 = d1 + C;
    for (i64 c = 0; c < C; ++c) { K[c] = ld(xn + c); d1[c] = 0.0; d2[c] = 0.0; }
    for (i64 rb = r0; rb < r1; rb += FLUSH) {
        const i64 re = rb + FLUSH < r1 ? rb + FLUSH : r1;
        for (i64 c = 0; c < C; ++c) { f1[c] = 0; f2[c] = 0; }
        i64 r = rb;
        for (; r + 4 <= re; r += 4) nsc_row4_sums<T, A>(xn + r * C, K, f1, f2, C);
        for (; r < re; ++r) nsc_row_sums<T, A>(xn + r * C, K, f1, f2, C);
        for (i64 c = 0; c < C; ++c) { d1[c] += (double)f1[c]; d2[c] += (double)f2[c]; }
    }
}

/* Group statistics of sample n from its chunks' sums; writes mean / rstd and the planar coefficients
 * coef[n][3][C] = (mf, a, bb) of v = (x - mf) * a + bb. The chunks' sums are added into chunk 0's slot (in
 * chunk order, so the same sums as a fresh accumulation), which then holds each channel's mean and M2: every
 * loop over channels is a plain loop the compiler vectorizes (this reduction cost as much as a pass over a
 * 7x7 sample when it went channel by channel over the chunks). */
template <typename T, typename A>
static void nsc_stats_reduce(const NscPlan &P, const T *x, i64 n, double *part, const T *w, const T *b,
                             double eps, double *mean, double *rstd, A *coef) {
    const i64 C = P.C, D = P.D, S = P.S;
    const T *xn = x + n * S * C;
    double *GN_R s1 = part + n * P.K * 2 * C, *GN_R s2 = s1 + C;
    for (i64 k = 1; k < P.K; ++k) {
        const double *GN_R p = part + (n * P.K + k) * 2 * C;
        for (i64 c = 0; c < C; ++c) { s1[c] += p[c]; s2[c] += p[C + c]; }
    }
    const double inv_s = 1.0 / (double)S;
    for (i64 c = 0; c < C; ++c) { /* channel mean (into s1) and M2 about it (into s2) */
        const double t1 = s1[c];
        double m2c = s2[c] - t1 * t1 * inv_s;
        m2c = m2c > 0.0 ? m2c : (m2c != m2c ? m2c : 0.0);
        s1[c] = (double)ld(xn + c) + t1 * inv_s;
        s2[c] = m2c;
    }
    A *mfp = coef + n * 3 * C, *ap = mfp + C, *bbp = mfp + 2 * C;
    for (i64 g = 0; g < P.G; ++g) {
        const double *GN_R mc = s1 + g * D, *GN_R m2 = s2 + g * D;
        const double mu = sum8(D, [&](i64 cc) { return mc[cc]; }) / (double)D;
        const double m2g = sum8(D, [&](i64 cc) {
            const double dm = mc[cc] - mu;
            return m2[cc] + (double)S * dm * dm;
        });
        const double rs = 1.0 / sqrt(m2g / (double)(D * S) + eps);
        mean[n * P.G + g] = mu;
        rstd[n * P.G + g] = rs;
        double delta;
        const A mf = round_mean<A>(mu, &delta);
        for (i64 c = g * D; c < (g + 1) * D; ++c) mfp[c] = mf;
        channel_coefs<T, A>(mu, rs, w, b, g * D, D, ap + g * D, bbp + g * D, (A *)nullptr);
    }
}

template <typename T, typename A, int ACT>
static void nsc_apply_chunk(const NscPlan &P, const T *x, const T *res, i64 n, i64 k, const A *coef, T *y) {
    const i64 C = P.C, r0 = k * P.R, r1 = r0 + P.R < P.S ? r0 + P.R : P.S;
    const A *mf = coef + n * 3 * C, *a = mf + C, *bb = mf + 2 * C;
    for (i64 r = r0; r < r1; ++r) {
        const i64 o = (n * P.S + r) * C;
        if (res)
            nsc_row_apply<T, A, ACT, true>(x + o, res + o, mf, a, bb, y + o, C, P.nts);
        else
            nsc_row_apply<T, A, ACT, false>(x + o, nullptr, mf, a, bb, y + o, C, P.nts);
    }
}

/* ================================================================ forward, NSC (channels-last) */
template <typename T, int ACT>
static int fwd_nsc(i64 N, i64 C, i64 S, i64 G, const T *x, const T *w, const T *b, const T *res, double eps, T *y,
                   double *mean, double *rstd, int nt) {
    typedef typename Acc<T>::type A;
    NscPlan P = nsc_plan(N, C, S, G, nt);
    P.nts = nt_output<T>(N * S * C) && nt_rows_ok(y, C);
    double *part = (double *)malloc(sizeof(double) * (size_t)(N * P.K * 2 * C));
    A *coef = (A *)malloc(sizeof(A) * (size_t)(N * 3 * C));
    int err = (part && coef) ? GN_OK : GN_ENOMEM;
    if (!err) {
#pragma omp parallel num_threads(P.nt) if (P.nt > 1)
        {
            ThreadScratch<A> ts(3 * C, &err);
            A *scratch = ts.p;
            const bool ok = ts.ok();
            FtzGuard ftz;
            if (P.per_sample) {
#pragma omp for schedule(dynamic, 1)
                for (i64 n = 0; n < N; ++n) {
                    if (!ok) continue;
                    for (i64 k = 0; k < P.K; ++k) nsc_stats_chunk<T, A>(P, x, n, k, scratch, part);
                    nsc_stats_reduce<T, A>(P, x, n, part, w, b, eps, mean, rstd, coef);
                    for (i64 k = 0; k < P.K; ++k) nsc_apply_chunk<T, A, ACT>(P, x, res, n, k, coef, y);
                }
            } else {
#pragma omp for schedule(dynamic, 1)
                for (i64 it = 0; it < N * P.K; ++it)
                    if (ok) nsc_stats_chunk<T, A>(P, x, it / P.K, it % P.K, scratch, part);
                /* every item's partial sums must exist before any reduction reads them (implicit barrier) */
                if (!err) {
#pragma omp for schedule(dynamic, 1)
                    for (i64 n = 0; n < N; ++n) nsc_stats_reduce<T, A>(P, x, n, part, w, b, eps, mean, rstd, coef);
#pragma omp for schedule(dynamic, 1)
                    for (i64 it = 0; it < N * P.K; ++it)
                        nsc_apply_chunk<T, A, ACT>(P, x, res, it / P.K, it % P.K, coef, y);
                }
            }
            store_fence(P.nts);
        }
    }
    free(part);
    free(coef);
    return err;
}

/* ================================================================ backward helpers */
/* Over one run of one channel: sums of dv and dv * (x - mf), dv = dy * act'((x - mf) * a + bb [+ r])
 * (lane_sums); RES: dv (rounded to T) stored to dr. */
template <typename T, typename A, int ACT, bool RES>
static void bwd_row_sums(const T *GN_R dy, const T *GN_R x, const T *GN_R r, T *GN_R dr, i64 L, A mf, A a, A bb,
                         double *sa, double *sb) {
#ifdef GN_AVX512
    if constexpr (std::is_same<A, float>::value)
        return v512::bwd_row_sums<T, ACT, RES>(dy, x, r, dr, L, mf, a, bb, sa, sb);
#endif
    lane_sums<A>(L, [=](i64 i, A &u, A &v) {
        const A xc = ld(x + i) - mf;
        A pre = xc * a + bb;
        if (RES) pre += ld(r + i);
        A g = act_b<ACT, A>(pre, ld(dy + i));
        if (RES) {
            g = round_to<T, A>(g);
            st(dr + i, g);
        }
        u = g;
        v = g * xc;
    }, sa, sb);
}

/* bwd_row_sums with a residual when dr is given (never with no activation: that variant is not compiled) */
template <typename T, typename A, int ACT>
static inline void bwd_row_sums_any(const T *dy, const T *x, const T *r, T *dr, i64 L, A mf, A a, A bb, double *sa,
                                    double *sb) {
    if constexpr (ACT != GN_ACT_NONE)
        if (dr) return bwd_row_sums<T, A, ACT, true>(dy, x, r, dr, L, mf, a, bb, sa, sb);
    bwd_row_sums<T, A, ACT, false>(dy, x, nullptr, nullptr, L, mf, a, bb, sa, sb);
}

/* From per-channel sums (A_c = sum dv, B_c = sum dv * (x - mean)) of one group: dx = al*dv + (x - mf)*k1 + k2. */
struct GroupBwd { double k1, k2; };
template <typename T>
static inline GroupBwd group_bwd_coef(const T *w, i64 c0, i64 D, i64 S, const double *Ac, const double *Bc,
                                      double mean, double rstd, double delta) {
    const double sa = w ? sum8(D, [&](i64 cc) { return (double)ld(w + c0 + cc) * Ac[cc]; })
                        : sum8(D, [&](i64 cc) { return Ac[cc]; });
    const double sb = w ? sum8(D, [&](i64 cc) { return (double)ld(w + c0 + cc) * Bc[cc]; })
                        : sum8(D, [&](i64 cc) { return Bc[cc]; });
    const double M = (double)(D * S);
    GroupBwd r;
    r.k1 = -rstd * rstd * rstd * sb / M;
    r.k2 = -rstd * sa / M - delta * r.k1; /* written in terms of (x - mf), mf = mean - delta */
    (void)mean;
    return r;
}

/* dweight[c] = sum_n rstd[n, g] * B[n, c], dbias[c] = sum_n A[n, c] (fixed order over n), for the channels of
 * group g; called for every g inside a parallel region (omp for), after all the per-sample sums exist. */
template <typename T>
static void param_grads_group(i64 g, i64 N, i64 C, i64 G, const double *rstd, const double *Ab, const double *Bb,
                              T *dw, T *db) {
    const i64 D = C / G;
    /* blocks of channels, samples in order for each: the same sums per channel as a loop over n inside a loop
     * over c, but the loop over channels is contiguous and vectorizes (the other order walked Ab / Bb with a
     * stride of C and one dependent add per sample) */
    for (i64 c0 = g * D; c0 < (g + 1) * D; c0 += CBLK) {
        const i64 nb = (g + 1) * D - c0 < CBLK ? (g + 1) * D - c0 : CBLK;
        double sw[CBLK], sbias[CBLK];
        for (i64 j = 0; j < nb; ++j) { sw[j] = 0.0; sbias[j] = 0.0; }
        for (i64 n = 0; n < N; ++n) {
            const double r = rstd[n * G + g];
            const double *GN_R bn = Bb + n * C + c0, *GN_R an = Ab + n * C + c0;
            for (i64 j = 0; j < nb; ++j) {
                sw[j] += r * bn[j];
                sbias[j] += an[j];
            }
        }
        for (i64 j = 0; j < nb; ++j) {
            if (dw) st(dw + c0 + j, (typename Acc<T>::type)sw[j]);
            if (db) st(db + c0 + j, (typename Acc<T>::type)sbias[j]);
        }
    }
}

/* ================================================================ backward, NCS (contiguous) */
/* With a residual (r, and ACT not none): the sums pass also stores dv to dr, and dx is computed from dv (as
 * for no activation); with ACT none the residual does not enter the backward (dv = dy). */
template <typename T, int ACT>
static int bwd_ncs(i64 N, i64 C, i64 S, i64 G, const T *dy, const T *x, const T *r, T *dr, const double *mean,
                   const double *rstd, const T *w, const T *b, T *dx, T *dw, T *db, int nt) {
    typedef typename Acc<T>::type A;
    const i64 D = C / G, items = N * G;
    double *Ab = (double *)malloc(sizeof(double) * (size_t)(N * C * 2));
    if (!Ab) return GN_ENOMEM;
    double *Bb = Ab + N * C;
    nt = nthreads_for(items, nt, N * C * S);
    const i64 chunk = ncs_items_per_chunk(D * S);
    const bool nts = dx && nt_output<T>(N * C * S);
    int err = GN_OK;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
    FtzGuard ftz;
    /* per-channel a, bb, al of the current group (planar), computed for the sums and reused for dx */
    ThreadScratch<A> ts(3 * D, &err);
    A *cf = ts.p;
#pragma omp for schedule(dynamic, chunk)
    for (i64 it = 0; it < items; ++it) {
        if (!cf) continue;
        const i64 n = it / G, g = it % G, c0 = g * D;
        const double mu = mean[it], rs = rstd[it];
        double delta;
        const A mf = round_mean<A>(mu, &delta);
        A *ca = cf, *cbb = cf + D, *cal = cf + 2 * D;
        channel_coefs<T, A>(mu, rs, w, b, c0, D, ca, cbb, cal);
        for (i64 cc = 0; cc < D; ++cc) {
            const i64 c = c0 + cc, off = (n * C + c) * S;
            double sa, sb;
            bwd_row_sums_any<T, A, ACT>(dy + off, x + off, r ? r + off : nullptr, dr ? dr + off : nullptr, S, mf,
                                        ca[cc], cbb[cc], &sa, &sb);
            Ab[n * C + c] = sa;
            Bb[n * C + c] = sb - delta * sa; /* centred on the exact mean */
        }
        if (!dx) continue;
        const GroupBwd k = group_bwd_coef<T>(w, c0, D, S, Ab + n * C + c0, Bb + n * C + c0, mu, rs, delta);
        const A k1 = (A)k.k1, k2 = (A)k.k2;
        const i64 off = (n * C + c0) * S;
        if constexpr (ACT != GN_ACT_NONE)
            if (dr) { /* dv is in dr: dx as for no activation */
                ncs_rows_dx<T, A, GN_ACT_NONE>(x + off, dr + off, dx + off, D, S, mf, ca, cbb, cal, k1, k2, nts);
                continue;
            }
        ncs_rows_dx<T, A, ACT>(x + off, dy + off, dx + off, D, S, mf, ca, cbb, cal, k1, k2, nts);
    }
    /* implicit barrier: every sample's sums exist; err is read after it (the same value in every thread) */
    if (!err && (dw || db)) {
#pragma omp for schedule(static)
        for (i64 g = 0; g < G; ++g) param_grads_group<T>(g, N, C, G, rstd, Ab, Bb, dw, db);
    }
    store_fence(nts);
    }
    free(Ab);
    return err;
}

/* ================================================================ backward, NSC (channels-last) */
/* Same chunking and schedules as the NSC forward. coef[n][6][C] = (mf, a, bb, al = rstd * w, k1, k2). */
template <typename T, typename A>
static void nsc_bwd_coef_init(const NscPlan &P, i64 n, const double *mean, const double *rstd, const T *w,
                              const T *b, A *coef) {
    const i64 C = P.C;
    A *q = coef + n * 6 * C;
    for (i64 g = 0; g < P.G; ++g) {
        const i64 ng = n * P.G + g, c0 = g * P.D;
        double delta;
        const A mf = round_mean<A>(mean[ng], &delta);
        for (i64 c = c0; c < c0 + P.D; ++c) q[c] = mf;
        channel_coefs<T, A>(mean[ng], rstd[ng], w, b, c0, P.D, q + C + c0, q + 2 * C + c0, q + 3 * C + c0);
    }
}

template <typename T, typename A, int ACT, bool RES>
static void nsc_bwd_chunk_sums(const NscPlan &P, const T *dy, const T *x, const T *res, T *dres, i64 n, i64 k,
                               const A *coef, A *scratch, double *part) {
    const i64 C = P.C, r0 = k * P.R, r1 = r0 + P.R < P.S ? r0 + P.R : P.S;
    const A *mf = coef + n * 6 * C, *a = mf + C, *bb = mf + 2 * C;
    A *f1 = scratch, *f2 = scratch + C;
    double *p1 = part + (n * P.K + k) * 2 * C, *p2 = p1 + C;
    for (i64 c = 0; c < C; ++c) { p1[c] = 0.0; p2[c] = 0.0; }
    for (i64 rb = r0; rb < r1; rb += FLUSH) {
        const i64 re = rb + FLUSH < r1 ? rb + FLUSH : r1;
        for (i64 c = 0; c < C; ++c) { f1[c] = 0; f2[c] = 0; }
        i64 r = rb;
        for (; r + 4 <= re; r += 4) {
            const i64 o = (n * P.S + r) * C;
            nsc_row4_bwd_sums<T, A, ACT, RES>(x + o, dy + o, RES ? res + o : nullptr, RES ? dres + o : nullptr, mf, a,
                                              bb, f1, f2, C);
        }
        for (; r < re; ++r) {
            const i64 o = (n * P.S + r) * C;
            nsc_row_bwd_sums<T, A, ACT, RES>(x + o, dy + o, RES ? res + o : nullptr, RES ? dres + o : nullptr, mf, a,
                                             bb, f1, f2, C);
        }
        for (i64 c = 0; c < C; ++c) { p1[c] += (double)f1[c]; p2[c] += (double)f2[c]; }
    }
}

/* Per-channel sums of sample n (Ab, Bb, B centred on the exact mean) and the dx coefficients k1, k2. */
template <typename T, typename A>
static void nsc_bwd_reduce(const NscPlan &P, i64 n, const double *part, const double *mean, const double *rstd,
                           const T *w, double *Ab, double *Bb, A *coef) {
    const i64 C = P.C, D = P.D;
    A *q = coef + n * 6 * C;
    double *GN_R sa = Ab + n * C, *GN_R sb = Bb + n * C;
    for (i64 c = 0; c < C; ++c) { sa[c] = 0.0; sb[c] = 0.0; }
    for (i64 k = 0; k < P.K; ++k) { /* chunk order, channels vectorized */
        const double *GN_R p = part + (n * P.K + k) * 2 * C;
        for (i64 c = 0; c < C; ++c) { sa[c] += p[c]; sb[c] += p[C + c]; }
    }
    for (i64 g = 0; g < P.G; ++g) {
        const i64 c0 = g * D, ng = n * P.G + g;
        double delta;
        (void)round_mean<A>(mean[ng], &delta);
        for (i64 c = c0; c < c0 + D; ++c) sb[c] -= delta * sa[c]; /* centred on the exact mean */
        const GroupBwd kk = group_bwd_coef<T>(w, c0, D, P.S, sa + c0, sb + c0, mean[ng], rstd[ng], delta);
        for (i64 cc = 0; cc < D; ++cc) {
            q[4 * C + c0 + cc] = (A)kk.k1;
            q[5 * C + c0 + cc] = (A)kk.k2;
        }
    }
}

template <typename T, typename A, int ACT>
static void nsc_bwd_dx_chunk(const NscPlan &P, const T *dy, const T *x, i64 n, i64 k, const A *coef, T *dx) {
    const i64 C = P.C, r0 = k * P.R, r1 = r0 + P.R < P.S ? r0 + P.R : P.S;
    const A *mf = coef + n * 6 * C, *a = mf + C, *bb = mf + 2 * C, *al = mf + 3 * C, *k1 = mf + 4 * C, *k2 = mf + 5 * C;
    for (i64 r = r0; r < r1; ++r) {
        const T *xr = x + (n * P.S + r) * C, *gr = dy + (n * P.S + r) * C;
        T *o = dx + (n * P.S + r) * C;
        nsc_row_dx<T, A, ACT>(xr, gr, mf, a, bb, al, k1, k2, o, C, P.nts);
    }
}

/* The sums and dx passes with or without a residual (dres: dv stored by the sums, read by the dx pass). */
template <typename T, typename A, int ACT>
static void nsc_bwd_sums_any(const NscPlan &P, const T *dy, const T *x, const T *res, T *dres, i64 n, i64 k,
                             const A *coef, A *scratch, double *part) {
    if constexpr (ACT != GN_ACT_NONE) /* (no activation: never a dres, that variant is not compiled) */
        if (dres) return nsc_bwd_chunk_sums<T, A, ACT, true>(P, dy, x, res, dres, n, k, coef, scratch, part);
    nsc_bwd_chunk_sums<T, A, ACT, false>(P, dy, x, nullptr, nullptr, n, k, coef, scratch, part);
}
template <typename T, typename A, int ACT>
static void nsc_bwd_dx_any(const NscPlan &P, const T *dy, const T *x, const T *dres, i64 n, i64 k, const A *coef,
                           T *dx) {
    if constexpr (ACT != GN_ACT_NONE)
        if (dres) return nsc_bwd_dx_chunk<T, A, GN_ACT_NONE>(P, dres, x, n, k, coef, dx); /* dv in dres */
    nsc_bwd_dx_chunk<T, A, ACT>(P, dy, x, n, k, coef, dx);
}
/* Residual as in bwd_ncs. */
template <typename T, int ACT>
static int bwd_nsc(i64 N, i64 C, i64 S, i64 G, const T *dy, const T *x, const T *res, T *dres, const double *mean,
                   const double *rstd, const T *w, const T *b, T *dx, T *dw, T *db, int nt) {
    typedef typename Acc<T>::type A;
    NscPlan P = nsc_plan(N, C, S, G, nt);
    P.nts = dx && nt_output<T>(N * S * C) && nt_rows_ok(dx, C);
    A *coef = (A *)malloc(sizeof(A) * (size_t)(N * C * 6));
    double *part = (double *)malloc(sizeof(double) * (size_t)(N * P.K * C * 2));
    double *Ab = (double *)malloc(sizeof(double) * (size_t)(N * C * 2));
    int err = (coef && part && Ab) ? GN_OK : GN_ENOMEM;
    if (!err) {
        double *Bb = Ab + N * C;
#pragma omp parallel num_threads(P.nt) if (P.nt > 1)
        {
            ThreadScratch<A> ts(2 * C, &err);
            A *scratch = ts.p;
            const bool ok = ts.ok();
            FtzGuard ftz;
            if (P.per_sample) {
#pragma omp for schedule(dynamic, 1)
                for (i64 n = 0; n < N; ++n) {
                    if (!ok) continue;
                    nsc_bwd_coef_init<T, A>(P, n, mean, rstd, w, b, coef);
                    for (i64 k = 0; k < P.K; ++k) nsc_bwd_sums_any<T, A, ACT>(P, dy, x, res, dres, n, k, coef, scratch, part);
                    nsc_bwd_reduce<T, A>(P, n, part, mean, rstd, w, Ab, Bb, coef);
                    if (dx)
                        for (i64 k = 0; k < P.K; ++k) nsc_bwd_dx_any<T, A, ACT>(P, dy, x, dres, n, k, coef, dx);
                }
            } else {
#pragma omp for schedule(static)
                for (i64 n = 0; n < N; ++n) nsc_bwd_coef_init<T, A>(P, n, mean, rstd, w, b, coef);
#pragma omp for schedule(dynamic, 1)
                for (i64 it = 0; it < N * P.K; ++it)
                    if (ok) nsc_bwd_sums_any<T, A, ACT>(P, dy, x, res, dres, it / P.K, it % P.K, coef, scratch, part);
                if (!err) { /* read after the implicit barrier: the same value in every thread */
#pragma omp for schedule(dynamic, 1)
                    for (i64 n = 0; n < N; ++n) nsc_bwd_reduce<T, A>(P, n, part, mean, rstd, w, Ab, Bb, coef);
                    if (dx) {
#pragma omp for schedule(dynamic, 1)
                        for (i64 it = 0; it < N * P.K; ++it)
                            nsc_bwd_dx_any<T, A, ACT>(P, dy, x, dres, it / P.K, it % P.K, coef, dx);
                    }
                }
            }
            /* after the implicit barrier of the last omp for: all sums exist */
            if (!err && (dw || db)) {
#pragma omp for schedule(static)
                for (i64 g = 0; g < G; ++g) param_grads_group<T>(g, N, C, G, rstd, Ab, Bb, dw, db);
            }
            store_fence(P.nts);
        }
    }
    free(coef);
    free(part);
    free(Ab);
    return err;
}

/* ================================================================ entry points of this ISA level */
template <typename T, int ACT>
static int fwd_t(int layout, i64 N, i64 C, i64 S, i64 G, const void *x, const void *w, const void *b, const void *r,
                 double eps, void *y, double *mean, double *rstd, int nt) {
    if (layout == GN_LAYOUT_NCS)
        return fwd_ncs<T, ACT>(N, C, S, G, (const T *)x, (const T *)w, (const T *)b, (const T *)r, eps, (T *)y, mean,
                               rstd, nt);
    return fwd_nsc<T, ACT>(N, C, S, G, (const T *)x, (const T *)w, (const T *)b, (const T *)r, eps, (T *)y, mean,
                           rstd, nt);
}
template <typename T, int ACT>
static int bwd_t(int layout, i64 N, i64 C, i64 S, i64 G, const void *dy, const void *x, const void *r, void *dr,
                 const double *mean, const double *rstd, const void *w, const void *b, void *dx, void *dw, void *db,
                 int nt) {
    if (ACT == GN_ACT_NONE) r = dr = nullptr; /* dv = dy: the residual does not enter */
    if (layout == GN_LAYOUT_NCS)
        return bwd_ncs<T, ACT>(N, C, S, G, (const T *)dy, (const T *)x, (const T *)r, (T *)dr, mean, rstd, (const T *)w,
                               (const T *)b, (T *)dx, (T *)dw, (T *)db, nt);
    return bwd_nsc<T, ACT>(N, C, S, G, (const T *)dy, (const T *)x, (const T *)r, (T *)dr, mean, rstd, (const T *)w,
                           (const T *)b, (T *)dx, (T *)dw, (T *)db, nt);
}

template <typename T>
static int fwd_act(int act, int layout, i64 N, i64 C, i64 S, i64 G, const void *x, const void *w, const void *b,
                   const void *r, double eps, void *y, double *mean, double *rstd, int nt) {
    switch (act) {
    case GN_ACT_NONE: return fwd_t<T, GN_ACT_NONE>(layout, N, C, S, G, x, w, b, r, eps, y, mean, rstd, nt);
    case GN_ACT_RELU: return fwd_t<T, GN_ACT_RELU>(layout, N, C, S, G, x, w, b, r, eps, y, mean, rstd, nt);
    case GN_ACT_SILU: return fwd_t<T, GN_ACT_SILU>(layout, N, C, S, G, x, w, b, r, eps, y, mean, rstd, nt);
    case GN_ACT_GELU: return fwd_t<T, GN_ACT_GELU>(layout, N, C, S, G, x, w, b, r, eps, y, mean, rstd, nt);
    }
    return GN_EINVAL;
}
template <typename T>
static int bwd_act(int act, int layout, i64 N, i64 C, i64 S, i64 G, const void *dy, const void *x, const void *r,
                   void *dr, const double *mean, const double *rstd, const void *w, const void *b, void *dx, void *dw,
                   void *db, int nt) {
    switch (act) {
    case GN_ACT_NONE:
        return bwd_t<T, GN_ACT_NONE>(layout, N, C, S, G, dy, x, r, dr, mean, rstd, w, b, dx, dw, db, nt);
    case GN_ACT_RELU:
        return bwd_t<T, GN_ACT_RELU>(layout, N, C, S, G, dy, x, r, dr, mean, rstd, w, b, dx, dw, db, nt);
    case GN_ACT_SILU:
        return bwd_t<T, GN_ACT_SILU>(layout, N, C, S, G, dy, x, r, dr, mean, rstd, w, b, dx, dw, db, nt);
    case GN_ACT_GELU:
        return bwd_t<T, GN_ACT_GELU>(layout, N, C, S, G, dy, x, r, dr, mean, rstd, w, b, dx, dw, db, nt);
    }
    return GN_EINVAL;
}

/* Arguments were validated by gn_dispatch.cpp. */
int forward(int dtype, int layout, i64 N, i64 C, i64 S, i64 G, const void *x, const void *w, const void *b,
            const void *r, double eps, int act, void *y, double *mean, double *rstd, int nt) {
    switch (dtype) {
#ifndef GN_ONLY_BF16 /* the AVX512_BF16 level compiles only bfloat16 (see gn_dispatch.cpp) */
    case GN_F32: return fwd_act<float>(act, layout, N, C, S, G, x, w, b, r, eps, y, mean, rstd, nt);
#endif
#ifndef GN_SKIP_F64 /* float64 is compiled only into the baseline level (see gn_dispatch.cpp) */
    case GN_F64: return fwd_act<double>(act, layout, N, C, S, G, x, w, b, r, eps, y, mean, rstd, nt);
#endif
    case GN_BF16: return fwd_act<bf16_t>(act, layout, N, C, S, G, x, w, b, r, eps, y, mean, rstd, nt);
#ifndef GN_ONLY_BF16
    case GN_F16: return fwd_act<f16_t>(act, layout, N, C, S, G, x, w, b, r, eps, y, mean, rstd, nt);
#endif
    }
    return GN_EINVAL;
}
int backward(int dtype, int layout, i64 N, i64 C, i64 S, i64 G, const void *dy, const void *x, const void *r, void *dr,
             const double *mean, const double *rstd, const void *w, const void *b, int act, void *dx, void *dw,
             void *db, int nt) {
    switch (dtype) {
#ifndef GN_ONLY_BF16
    case GN_F32: return bwd_act<float>(act, layout, N, C, S, G, dy, x, r, dr, mean, rstd, w, b, dx, dw, db, nt);
#endif
#ifndef GN_SKIP_F64 /* float64 is compiled only into the baseline level (see gn_dispatch.cpp) */
    case GN_F64: return bwd_act<double>(act, layout, N, C, S, G, dy, x, r, dr, mean, rstd, w, b, dx, dw, db, nt);
#endif
    case GN_BF16: return bwd_act<bf16_t>(act, layout, N, C, S, G, dy, x, r, dr, mean, rstd, w, b, dx, dw, db, nt);
#ifndef GN_ONLY_BF16
    case GN_F16: return bwd_act<f16_t>(act, layout, N, C, S, G, dy, x, r, dr, mean, rstd, w, b, dx, dw, db, nt);
#endif
    }
    return GN_EINVAL;
}
}  // namespace GN_NS
