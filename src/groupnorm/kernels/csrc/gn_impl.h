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

#include "gn_api.h"

#ifndef GN_NS
#error "define GN_NS before including gn_impl.h"
#endif

namespace GN_NS {

typedef int64_t i64;

struct bf16_t { uint16_t v; };
#if defined(__FLT16_MAX__)
typedef _Float16 f16_t;
#define GN_HAVE_FLOAT16 1
#else
struct f16_t { uint16_t v; };
#define GN_HAVE_FLOAT16 0
#endif

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
#if GN_HAVE_FLOAT16
static inline float ld(const f16_t *p) { return (float)*p; }
static inline void st(f16_t *p, float v) { *p = (f16_t)v; }
#else
static inline float ld(const f16_t *p) {
    uint32_t h = p->v, s = (h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0x1f) return bits_to_float(s | 0x7f800000u | (m << 13));
    if (e == 0) {  /* subnormal or zero */
        float f = (float)m * 5.9604644775390625e-8f;
        return s ? -f : f;
    }
    return bits_to_float(s | ((e + 112u) << 23) | (m << 13));
}
static inline void st(f16_t *p, float v) {
    uint32_t u = float_to_bits(v), s = (u >> 16) & 0x8000u;
    float a = fabsf(v);
    uint16_t h;
    if (a != a) h = (uint16_t)(s | 0x7e00u);
    else if (a >= 65520.0f) h = (uint16_t)(s | 0x7c00u);
    else if (a < 6.103515625e-05f) h = (uint16_t)(s | (uint32_t)nearbyintf(a * 16777216.0f));
    else {
        uint32_t ua = float_to_bits(a);
        uint32_t r = ua + 0xfffu + ((ua >> 13) & 1u);
        h = (uint16_t)(s | ((r >> 13) - (112u << 10)));
    }
    p->v = h;
}
#endif

/* Compute type: float for fp32 / bf16 / fp16, double for fp64. */
template <typename T> struct Acc { typedef float type; };
template <> struct Acc<double> { typedef double type; };

/* ---------------------------------------------------------------- activations */
/* exp for float, vectorizable (Cephes polynomial, ~1 ulp on the clamped range [-87, 88]). */
static inline float gn_expf(float x) {
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
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
        A s = (A)1 / ((A)1 + gexp(-v));
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
enum { W = 32 };        /* lanes of a float accumulator block */
enum { FLUSH = 64 };    /* elements per lane before folding into double */

static inline int nthreads_for(i64 items, int nt) {
    if (nt < 1) nt = 1;
    if ((i64)nt > items) nt = (int)(items < 1 ? 1 : items);
    return nt;
}

/* Sum of d and d*d, d = x[i] - K, over a contiguous run, in double (fixed order). */
template <typename T, typename A>
static void shifted_sums(const T *x, i64 L, A K, double *s1o, double *s2o) {
    double S1 = 0.0, S2 = 0.0;
    i64 i = 0;
    const i64 Lv = L - L % W;
    while (i < Lv) {
        A a1[W], a2[W];
        for (int j = 0; j < W; ++j) { a1[j] = 0; a2[j] = 0; }
        i64 end = i + (i64)W * FLUSH;
        if (end > Lv) end = Lv;
        for (; i < end; i += W) {
            for (int j = 0; j < W; ++j) {
                A d = ld(x + i + j) - K;
                a1[j] += d;
                a2[j] += d * d;
            }
        }
        A b1 = 0, b2 = 0;
        for (int j = 0; j < W; ++j) { b1 += a1[j]; b2 += a2[j]; }
        S1 += (double)b1;
        S2 += (double)b2;
    }
    for (; i < L; ++i) {
        double d = (double)ld(x + i) - (double)K;
        S1 += d;
        S2 += d * d;
    }
    *s1o = S1;
    *s2o = S2;
}

/* Turn (mean in double) into the compute-type mean mf and the correction delta = mean - mf. */
template <typename A> static inline A round_mean(double mean, double *delta) {
    A mf = (A)mean;
    *delta = mean - (double)mf;
    return mf;
}

/* Per (n, c) coefficients of the affine map v = (x - mf) * a + bb. */
template <typename T, typename A>
static inline void affine_coef(double mean, double rstd, const T *w, const T *b, i64 c, A *mf, A *a, A *bb) {
    double delta;
    *mf = round_mean<A>(mean, &delta);
    double wc = w ? (double)ld(w + c) : 1.0, bc = b ? (double)ld(b + c) : 0.0;
    double ad = rstd * wc;
    *a = (A)ad;
    *bb = (A)(bc - delta * ad);
}

/* ================================================================ forward, NCS (contiguous) */
template <typename T, int ACT>
static int fwd_ncs(i64 N, i64 C, i64 S, i64 G, const T *x, const T *w, const T *b, double eps, T *y,
                   double *mean, double *rstd, int nt) {
    typedef typename Acc<T>::type A;
    const i64 D = C / G, L = D * S, items = N * G;
    nt = nthreads_for(items, nt);
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
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
        for (i64 cc = 0; cc < D; ++cc) {
            const i64 c = g * D + cc;
            A mf, a, bb;
            affine_coef<T, A>(mu, rs, w, b, c, &mf, &a, &bb);
            const T *xr = xg + cc * S;
            T *yr = yg + cc * S;
            for (i64 s = 0; s < S; ++s) st(yr + s, act_f<ACT, A>((ld(xr + s) - mf) * a + bb));
        }
    }
    return GN_OK;
}

/* ================================================================ channels-last helpers */
/* Rows of a sample are cut into chunks of a size that depends only on (S, C), never on the thread count. */
static inline i64 nsc_rows_per_chunk(i64 S, i64 C) {
    i64 r = (i64)16384 / (C > 0 ? C : 1);
    if (r < 1) r = 1;
    if (r > S) r = S;
    return r;
}

/* Per-channel shifted sums over rows [r0, r1) of one sample (layout (S, C)); K has C values. */
template <typename T, typename A>
static void nsc_channel_sums(const T *xn, i64 C, i64 r0, i64 r1, const A *K, A *f1, A *f2, double *d1, double *d2) {
    for (i64 c = 0; c < C; ++c) { d1[c] = 0.0; d2[c] = 0.0; }
    for (i64 rb = r0; rb < r1; rb += FLUSH) {
        const i64 re = rb + FLUSH < r1 ? rb + FLUSH : r1;
        for (i64 c = 0; c < C; ++c) { f1[c] = 0; f2[c] = 0; }
        for (i64 r = rb; r < re; ++r) {
            const T *row = xn + r * C;
            for (i64 c = 0; c < C; ++c) {
                A d = ld(row + c) - K[c];
                f1[c] += d;
                f2[c] += d * d;
            }
        }
        for (i64 c = 0; c < C; ++c) { d1[c] += (double)f1[c]; d2[c] += (double)f2[c]; }
    }
}

/* ================================================================ forward, NSC (channels-last) */
template <typename T, int ACT>
static int fwd_nsc(i64 N, i64 C, i64 S, i64 G, const T *x, const T *w, const T *b, double eps, T *y,
                   double *mean, double *rstd, int nt) {
    typedef typename Acc<T>::type A;
    const i64 D = C / G, R = nsc_rows_per_chunk(S, C), K_ = (S + R - 1) / R, items = N * K_;
    /* part: per (n, chunk, channel) the two double sums; coef: per (n, c) mf, a, bb; shift per (n, c). */
    double *part = (double *)malloc(sizeof(double) * (size_t)(items * C * 2));
    A *coef = (A *)malloc(sizeof(A) * (size_t)(N * C * 3));
    A *shift = (A *)malloc(sizeof(A) * (size_t)(N * C));
    int err = GN_OK;
    if (!part || !coef || !shift) { err = GN_ENOMEM; goto done; }
    for (i64 n = 0; n < N; ++n)
        for (i64 c = 0; c < C; ++c) shift[n * C + c] = ld(x + n * S * C + c);
    {
        int t1 = nthreads_for(items, nt);
#pragma omp parallel num_threads(t1) if (t1 > 1)
        {
            A *f = (A *)malloc(sizeof(A) * (size_t)(2 * C));
            if (!f) {
#pragma omp atomic write
                err = GN_ENOMEM;
            }
#pragma omp for schedule(static)
            for (i64 it = 0; it < items; ++it) {
                if (!f) continue;
                const i64 n = it / K_, k = it % K_;
                const i64 r0 = k * R, r1 = r0 + R < S ? r0 + R : S;
                double *p = part + it * C * 2;
                nsc_channel_sums<T, A>(x + n * S * C, C, r0, r1, shift + n * C, f, f + C, p, p + C);
            }
            free(f);
        }
    }
    if (err) goto done;
    {
        const i64 ng = N * G;
        int t2 = nthreads_for(ng, nt);
#pragma omp parallel for schedule(static) num_threads(t2) if (t2 > 1)
        for (i64 it = 0; it < ng; ++it) {
            const i64 n = it / G, g = it % G;
            /* per channel: mean m_c and M2_c; then combine the D channels of the group exactly. */
            double msum = 0.0;
            for (i64 cc = 0; cc < D; ++cc) {
                const i64 c = g * D + cc;
                double s1 = 0.0;
                for (i64 k = 0; k < K_; ++k) s1 += part[((n * K_ + k) * C * 2) + c];
                msum += (double)shift[n * C + c] + s1 / (double)S;
            }
            const double mu = msum / (double)D;
            double m2 = 0.0;
            for (i64 cc = 0; cc < D; ++cc) {
                const i64 c = g * D + cc;
                double s1 = 0.0, s2 = 0.0;
                for (i64 k = 0; k < K_; ++k) {
                    const double *p = part + (n * K_ + k) * C * 2;
                    s1 += p[c];
                    s2 += p[C + c];
                }
                const double dm = (double)shift[n * C + c] + s1 / (double)S - mu;
                double m2c = s2 - s1 * s1 / (double)S;
                if (!(m2c > 0.0)) m2c = m2c != m2c ? m2c : 0.0;
                m2 += m2c + (double)S * dm * dm;
            }
            const double var = m2 / (double)(D * S);
            const double rs = 1.0 / sqrt(var + eps);
            mean[it] = mu;
            rstd[it] = rs;
            for (i64 cc = 0; cc < D; ++cc) {
                const i64 c = g * D + cc;
                A *q = coef + (n * C + c) * 3;
                affine_coef<T, A>(mu, rs, w, b, c, q, q + 1, q + 2);
            }
        }
    }
    {
        /* reshuffle coef into three planar arrays per sample for unit-stride vector loads */
        A *planar = (A *)malloc(sizeof(A) * (size_t)(N * C * 3));
        if (!planar) { err = GN_ENOMEM; goto done; }
        for (i64 n = 0; n < N; ++n)
            for (i64 c = 0; c < C; ++c)
                for (int j = 0; j < 3; ++j) planar[(n * 3 + j) * C + c] = coef[(n * C + c) * 3 + j];
        int t3 = nthreads_for(items, nt);
#pragma omp parallel for schedule(static) num_threads(t3) if (t3 > 1)
        for (i64 it = 0; it < items; ++it) {
            const i64 n = it / K_, k = it % K_;
            const i64 r0 = k * R, r1 = r0 + R < S ? r0 + R : S;
            const A *mf = planar + (n * 3 + 0) * C, *a = planar + (n * 3 + 1) * C, *bb = planar + (n * 3 + 2) * C;
            for (i64 r = r0; r < r1; ++r) {
                const T *xr = x + (n * S + r) * C;
                T *yr = y + (n * S + r) * C;
                for (i64 c = 0; c < C; ++c) st(yr + c, act_f<ACT, A>((ld(xr + c) - mf[c]) * a[c] + bb[c]));
            }
        }
        free(planar);
    }
done:
    free(part);
    free(coef);
    free(shift);
    return err;
}

/* ================================================================ backward helpers */
/* Over one run of one channel: sums of dv and dv * (x - mf), dv = dy * act'((x - mf) * a + bb). */
template <typename T, typename A, int ACT>
static void bwd_row_sums(const T *dy, const T *x, i64 L, A mf, A a, A bb, double *sa, double *sb) {
    double SA = 0.0, SB = 0.0;
    i64 i = 0;
    const i64 Lv = L - L % W;
    while (i < Lv) {
        A a1[W], a2[W];
        for (int j = 0; j < W; ++j) { a1[j] = 0; a2[j] = 0; }
        i64 end = i + (i64)W * FLUSH;
        if (end > Lv) end = Lv;
        for (; i < end; i += W) {
            for (int j = 0; j < W; ++j) {
                A xc = ld(x + i + j) - mf;
                A g = act_b<ACT, A>(xc * a + bb, ld(dy + i + j));
                a1[j] += g;
                a2[j] += g * xc;
            }
        }
        A b1 = 0, b2 = 0;
        for (int j = 0; j < W; ++j) { b1 += a1[j]; b2 += a2[j]; }
        SA += (double)b1;
        SB += (double)b2;
    }
    for (; i < L; ++i) {
        A xc = ld(x + i) - mf;
        A g = act_b<ACT, A>(xc * a + bb, ld(dy + i));
        SA += (double)g;
        SB += (double)g * (double)xc;
    }
    *sa = SA;
    *sb = SB;
}

/* From per-channel sums (A_c = sum dv, B_c = sum dv * (x - mean)) of one group: dx = al*dv + (x - mf)*k1 + k2. */
struct GroupBwd { double k1, k2; };
template <typename T>
static inline GroupBwd group_bwd_coef(const T *w, i64 c0, i64 D, i64 S, const double *Ac, const double *Bc,
                                      double mean, double rstd, double delta) {
    double sa = 0.0, sb = 0.0;
    for (i64 cc = 0; cc < D; ++cc) {
        const double wc = w ? (double)ld(w + c0 + cc) : 1.0;
        sa += wc * Ac[cc];
        sb += wc * Bc[cc];
    }
    const double M = (double)(D * S);
    GroupBwd r;
    r.k1 = -rstd * rstd * rstd * sb / M;
    r.k2 = -rstd * sa / M - delta * r.k1; /* written in terms of (x - mf), mf = mean - delta */
    (void)mean;
    return r;
}

/* dweight[c] = sum_n rstd[n, g] * B[n, c], dbias[c] = sum_n A[n, c] (fixed order over n). */
template <typename T>
static void param_grads(i64 N, i64 C, i64 G, const double *rstd, const double *Ab, const double *Bb, T *dw, T *db) {
    const i64 D = C / G;
    for (i64 c = 0; c < C; ++c) {
        double sw = 0.0, sbias = 0.0;
        for (i64 n = 0; n < N; ++n) {
            sw += rstd[n * G + c / D] * Bb[n * C + c];
            sbias += Ab[n * C + c];
        }
        if (dw) st(dw + c, (typename Acc<T>::type)sw);
        if (db) st(db + c, (typename Acc<T>::type)sbias);
    }
}

/* ================================================================ backward, NCS (contiguous) */
template <typename T, int ACT>
static int bwd_ncs(i64 N, i64 C, i64 S, i64 G, const T *dy, const T *x, const double *mean, const double *rstd,
                   const T *w, const T *b, T *dx, T *dw, T *db, int nt) {
    typedef typename Acc<T>::type A;
    const i64 D = C / G, items = N * G;
    double *Ab = (double *)malloc(sizeof(double) * (size_t)(N * C * 2));
    if (!Ab) return GN_ENOMEM;
    double *Bb = Ab + N * C;
    nt = nthreads_for(items, nt);
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (i64 it = 0; it < items; ++it) {
        const i64 n = it / G, g = it % G, c0 = g * D;
        const double mu = mean[it], rs = rstd[it];
        double delta;
        (void)round_mean<A>(mu, &delta);
        for (i64 cc = 0; cc < D; ++cc) {
            const i64 c = c0 + cc, off = (n * C + c) * S;
            A mf, a, bb;
            affine_coef<T, A>(mu, rs, w, b, c, &mf, &a, &bb);
            double sa, sb;
            bwd_row_sums<T, A, ACT>(dy + off, x + off, S, mf, a, bb, &sa, &sb);
            Ab[n * C + c] = sa;
            Bb[n * C + c] = sb - delta * sa; /* centred on the exact mean */
        }
        if (!dx) continue;
        const GroupBwd k = group_bwd_coef<T>(w, c0, D, S, Ab + n * C + c0, Bb + n * C + c0, mu, rs, delta);
        const A k1 = (A)k.k1, k2 = (A)k.k2;
        for (i64 cc = 0; cc < D; ++cc) {
            const i64 c = c0 + cc, off = (n * C + c) * S;
            A mf, a, bb;
            affine_coef<T, A>(mu, rs, w, b, c, &mf, &a, &bb);
            const A al = (A)(rs * (w ? (double)ld(w + c) : 1.0));
            const T *xr = x + off, *gr = dy + off;
            T *o = dx + off;
            for (i64 s = 0; s < S; ++s) {
                A xc = ld(xr + s) - mf;
                A g = act_b<ACT, A>(xc * a + bb, ld(gr + s));
                st(o + s, al * g + xc * k1 + k2);
            }
        }
    }
    if (dw || db) param_grads<T>(N, C, G, rstd, Ab, Bb, dw, db);
    free(Ab);
    return GN_OK;
}

/* ================================================================ backward, NSC (channels-last) */
template <typename T, int ACT>
static int bwd_nsc(i64 N, i64 C, i64 S, i64 G, const T *dy, const T *x, const double *mean, const double *rstd,
                   const T *w, const T *b, T *dx, T *dw, T *db, int nt) {
    typedef typename Acc<T>::type A;
    const i64 D = C / G, R = nsc_rows_per_chunk(S, C), K_ = (S + R - 1) / R, items = N * K_;
    /* coef planes per sample: mf, a, bb, al (= rstd * w), k1, k2 */
    A *coef = (A *)malloc(sizeof(A) * (size_t)(N * C * 6));
    double *part = (double *)malloc(sizeof(double) * (size_t)(items * C * 2));
    double *Ab = (double *)malloc(sizeof(double) * (size_t)(N * C * 2));
    int err = GN_OK;
    if (!coef || !part || !Ab) { err = GN_ENOMEM; goto done; }
    {
        double *Bb = Ab + N * C;
        for (i64 n = 0; n < N; ++n)
            for (i64 c = 0; c < C; ++c) {
                const i64 ng = n * G + c / D;
                A *q = coef + n * C * 6;
                affine_coef<T, A>(mean[ng], rstd[ng], w, b, c, q + c, q + C + c, q + 2 * C + c);
                q[3 * C + c] = (A)(rstd[ng] * (w ? (double)ld(w + c) : 1.0));
            }
        int t1 = nthreads_for(items, nt);
#pragma omp parallel num_threads(t1) if (t1 > 1)
        {
            A *f = (A *)malloc(sizeof(A) * (size_t)(2 * C));
            if (!f) {
#pragma omp atomic write
                err = GN_ENOMEM;
            }
#pragma omp for schedule(static)
            for (i64 it = 0; it < items; ++it) {
                if (!f) continue;
                const i64 n = it / K_, k = it % K_;
                const i64 r0 = k * R, r1 = r0 + R < S ? r0 + R : S;
                const A *mf = coef + n * C * 6, *a = mf + C, *bb = mf + 2 * C;
                A *f1 = f, *f2 = f + C;
                double *p1 = part + it * C * 2, *p2 = p1 + C;
                for (i64 c = 0; c < C; ++c) { p1[c] = 0.0; p2[c] = 0.0; }
                for (i64 rb = r0; rb < r1; rb += FLUSH) {
                    const i64 re = rb + FLUSH < r1 ? rb + FLUSH : r1;
                    for (i64 c = 0; c < C; ++c) { f1[c] = 0; f2[c] = 0; }
                    for (i64 r = rb; r < re; ++r) {
                        const T *xr = x + (n * S + r) * C, *gr = dy + (n * S + r) * C;
                        for (i64 c = 0; c < C; ++c) {
                            A xc = ld(xr + c) - mf[c];
                            A g = act_b<ACT, A>(xc * a[c] + bb[c], ld(gr + c));
                            f1[c] += g;
                            f2[c] += g * xc;
                        }
                    }
                    for (i64 c = 0; c < C; ++c) { p1[c] += (double)f1[c]; p2[c] += (double)f2[c]; }
                }
            }
            free(f);
        }
        if (err) goto done;
        const i64 ng_items = N * G;
        int t2 = nthreads_for(ng_items, nt);
#pragma omp parallel for schedule(static) num_threads(t2) if (t2 > 1)
        for (i64 it = 0; it < ng_items; ++it) {
            const i64 n = it / G, g = it % G, c0 = g * D;
            double delta;
            (void)round_mean<A>(mean[it], &delta);
            for (i64 cc = 0; cc < D; ++cc) {
                const i64 c = c0 + cc;
                double sa = 0.0, sb = 0.0;
                for (i64 k = 0; k < K_; ++k) {
                    const double *p = part + (n * K_ + k) * C * 2;
                    sa += p[c];
                    sb += p[C + c];
                }
                Ab[n * C + c] = sa;
                Bb[n * C + c] = sb - delta * sa;
            }
            const GroupBwd kk = group_bwd_coef<T>(w, c0, D, S, Ab + n * C + c0, Bb + n * C + c0, mean[it], rstd[it], delta);
            A *q = coef + n * C * 6;
            for (i64 cc = 0; cc < D; ++cc) {
                q[4 * C + c0 + cc] = (A)kk.k1;
                q[5 * C + c0 + cc] = (A)kk.k2;
            }
        }
        if (dx) {
            int t3 = nthreads_for(items, nt);
#pragma omp parallel for schedule(static) num_threads(t3) if (t3 > 1)
            for (i64 it = 0; it < items; ++it) {
                const i64 n = it / K_, k = it % K_;
                const i64 r0 = k * R, r1 = r0 + R < S ? r0 + R : S;
                const A *mf = coef + n * C * 6, *a = mf + C, *bb = mf + 2 * C, *al = mf + 3 * C, *k1 = mf + 4 * C,
                        *k2 = mf + 5 * C;
                for (i64 r = r0; r < r1; ++r) {
                    const T *xr = x + (n * S + r) * C, *gr = dy + (n * S + r) * C;
                    T *o = dx + (n * S + r) * C;
                    for (i64 c = 0; c < C; ++c) {
                        A xc = ld(xr + c) - mf[c];
                        A g = act_b<ACT, A>(xc * a[c] + bb[c], ld(gr + c));
                        st(o + c, al[c] * g + xc * k1[c] + k2[c]);
                    }
                }
            }
        }
        if (dw || db) param_grads<T>(N, C, G, rstd, Ab, Bb, dw, db);
    }
done:
    free(coef);
    free(part);
    free(Ab);
    return err;
}

/* ================================================================ entry points of this ISA level */
template <typename T, int ACT>
static int fwd_t(int layout, i64 N, i64 C, i64 S, i64 G, const void *x, const void *w, const void *b, double eps,
                 void *y, double *mean, double *rstd, int nt) {
    if (layout == GN_LAYOUT_NCS)
        return fwd_ncs<T, ACT>(N, C, S, G, (const T *)x, (const T *)w, (const T *)b, eps, (T *)y, mean, rstd, nt);
    return fwd_nsc<T, ACT>(N, C, S, G, (const T *)x, (const T *)w, (const T *)b, eps, (T *)y, mean, rstd, nt);
}
template <typename T, int ACT>
static int bwd_t(int layout, i64 N, i64 C, i64 S, i64 G, const void *dy, const void *x, const double *mean,
                 const double *rstd, const void *w, const void *b, void *dx, void *dw, void *db, int nt) {
    if (layout == GN_LAYOUT_NCS)
        return bwd_ncs<T, ACT>(N, C, S, G, (const T *)dy, (const T *)x, mean, rstd, (const T *)w, (const T *)b,
                               (T *)dx, (T *)dw, (T *)db, nt);
    return bwd_nsc<T, ACT>(N, C, S, G, (const T *)dy, (const T *)x, mean, rstd, (const T *)w, (const T *)b,
                           (T *)dx, (T *)dw, (T *)db, nt);
}

template <typename T>
static int fwd_act(int act, int layout, i64 N, i64 C, i64 S, i64 G, const void *x, const void *w, const void *b,
                   double eps, void *y, double *mean, double *rstd, int nt) {
    switch (act) {
    case GN_ACT_NONE: return fwd_t<T, GN_ACT_NONE>(layout, N, C, S, G, x, w, b, eps, y, mean, rstd, nt);
    case GN_ACT_RELU: return fwd_t<T, GN_ACT_RELU>(layout, N, C, S, G, x, w, b, eps, y, mean, rstd, nt);
    case GN_ACT_SILU: return fwd_t<T, GN_ACT_SILU>(layout, N, C, S, G, x, w, b, eps, y, mean, rstd, nt);
    case GN_ACT_GELU: return fwd_t<T, GN_ACT_GELU>(layout, N, C, S, G, x, w, b, eps, y, mean, rstd, nt);
    }
    return GN_EINVAL;
}
template <typename T>
static int bwd_act(int act, int layout, i64 N, i64 C, i64 S, i64 G, const void *dy, const void *x,
                   const double *mean, const double *rstd, const void *w, const void *b, void *dx, void *dw,
                   void *db, int nt) {
    switch (act) {
    case GN_ACT_NONE: return bwd_t<T, GN_ACT_NONE>(layout, N, C, S, G, dy, x, mean, rstd, w, b, dx, dw, db, nt);
    case GN_ACT_RELU: return bwd_t<T, GN_ACT_RELU>(layout, N, C, S, G, dy, x, mean, rstd, w, b, dx, dw, db, nt);
    case GN_ACT_SILU: return bwd_t<T, GN_ACT_SILU>(layout, N, C, S, G, dy, x, mean, rstd, w, b, dx, dw, db, nt);
    case GN_ACT_GELU: return bwd_t<T, GN_ACT_GELU>(layout, N, C, S, G, dy, x, mean, rstd, w, b, dx, dw, db, nt);
    }
    return GN_EINVAL;
}

/* Arguments were validated by gn_dispatch.cpp. */
int forward(int dtype, int layout, i64 N, i64 C, i64 S, i64 G, const void *x, const void *w, const void *b,
            double eps, int act, void *y, double *mean, double *rstd, int nt) {
    switch (dtype) {
    case GN_F32: return fwd_act<float>(act, layout, N, C, S, G, x, w, b, eps, y, mean, rstd, nt);
    case GN_F64: return fwd_act<double>(act, layout, N, C, S, G, x, w, b, eps, y, mean, rstd, nt);
    case GN_BF16: return fwd_act<bf16_t>(act, layout, N, C, S, G, x, w, b, eps, y, mean, rstd, nt);
    case GN_F16: return fwd_act<f16_t>(act, layout, N, C, S, G, x, w, b, eps, y, mean, rstd, nt);
    }
    return GN_EINVAL;
}
int backward(int dtype, int layout, i64 N, i64 C, i64 S, i64 G, const void *dy, const void *x, const double *mean,
             const double *rstd, const void *w, const void *b, int act, void *dx, void *dw, void *db, int nt) {
    switch (dtype) {
    case GN_F32: return bwd_act<float>(act, layout, N, C, S, G, dy, x, mean, rstd, w, b, dx, dw, db, nt);
    case GN_F64: return bwd_act<double>(act, layout, N, C, S, G, dy, x, mean, rstd, w, b, dx, dw, db, nt);
    case GN_BF16: return bwd_act<bf16_t>(act, layout, N, C, S, G, dy, x, mean, rstd, w, b, dx, dw, db, nt);
    case GN_F16: return bwd_act<f16_t>(act, layout, N, C, S, G, dy, x, mean, rstd, w, b, dx, dw, db, nt);
    }
    return GN_EINVAL;
}

}  // namespace GN_NS
