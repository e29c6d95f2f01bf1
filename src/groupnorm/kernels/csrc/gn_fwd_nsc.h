/* Forward, channels-last layout (N, S, C): rows of C channels; per chunk of rows, per-channel shifted sums
 * (four rows at a time, folded into double every FLUSH rows); per sample, the chunks' sums combined into each
 * channel's mean and M2, then each group's (Chan et al.); then y row by row. The schedules (whole samples per
 * thread, or chunks of all samples in three phases) are gn_runtime.h's nsc_plan.
 */
#ifndef GN_FWD_NSC_H
#define GN_FWD_NSC_H
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include <type_traits>

#include "gn_api.h"
#include "gn_convert.h"
#include "gn_math.h"
#include "gn_runtime.h"
#include "gn_v512.h"

namespace GN_NS {


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

/* Four consecutive rows (stride C): on AVX-512 each vector's coefficients are loaded once for the four. */
template <typename T, typename A, int ACT, bool RES>
static inline void nsc_row4_apply(const T *GN_R xr, const T *GN_R rr, const A *GN_R mf, const A *GN_R a,
                                  const A *GN_R bb, T *GN_R yr, i64 C, bool nt) {
#ifdef GN_AVX512
    if constexpr (std::is_same<A, float>::value)
        return v512::nsc_row4_apply<T, ACT, RES>(xr, rr, mf, a, bb, yr, C, nt);
#endif
#pragma GCC unroll 4
    for (int r = 0; r < 4; ++r)
        nsc_row_apply<T, A, ACT, RES>(xr + r * C, RES ? rr + r * C : nullptr, mf, a, bb, yr + r * C, C, nt);
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
        channel_coefs<T, A>(mu, rs, w, b, g * D, D, ap + g * D, bbp + g * D);
    }
}

template <typename T, typename A, int ACT>
static void nsc_apply_chunk(const NscPlan &P, const T *x, const T *res, i64 n, i64 k, const A *coef, T *y) {
    const i64 C = P.C, r0 = k * P.R, r1 = r0 + P.R < P.S ? r0 + P.R : P.S;
    const A *mf = coef + n * 3 * C, *a = mf + C, *bb = mf + 2 * C;
    i64 r = r0;
    for (; r + 4 <= r1; r += 4) {
        const i64 o = (n * P.S + r) * C;
        if (res)
            nsc_row4_apply<T, A, ACT, true>(x + o, res + o, mf, a, bb, y + o, C, P.nts);
        else
            nsc_row4_apply<T, A, ACT, false>(x + o, nullptr, mf, a, bb, y + o, C, P.nts);
    }
    for (; r < r1; ++r) {
        const i64 o = (n * P.S + r) * C;
        if (res)
            nsc_row_apply<T, A, ACT, true>(x + o, res + o, mf, a, bb, y + o, C, P.nts);
        else
            nsc_row_apply<T, A, ACT, false>(x + o, nullptr, mf, a, bb, y + o, C, P.nts);
    }
}

/* ================================================================ forward, NSC (channels-last) */
template <typename T, int ACT>
static int fwd_nsc(const FwdArgs<T> &p) {
    typedef typename Acc<T>::type A;
    const i64 N = p.N, C = p.C, S = p.S;
    const T *x = p.x, *w = p.w, *b = p.b, *res = p.r;
    T *y = p.y;
    double *mean = p.mean, *rstd = p.rstd;
    const double eps = p.eps;
    const Caches cs = caches();
    NscPlan P = nsc_plan(N, C, S, p.G, (i64)sizeof(T), p.nt, cs);
    P.nts = nt_output<T>(N * S * C, P.nt, cs) && nt_rows_ok(y, C);
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
            const i64 elems = N * S * C;
            if (P.per_sample) {
                share_items(N, 1, elems, [&](i64 n) {
                    if (!ok) return;
                    for (i64 k = 0; k < P.K; ++k) nsc_stats_chunk<T, A>(P, x, n, k, scratch, part);
                    nsc_stats_reduce<T, A>(P, x, n, part, w, b, eps, mean, rstd, coef);
                    for (i64 k = 0; k < P.K; ++k) nsc_apply_chunk<T, A, ACT>(P, x, res, n, k, coef, y);
                });
            } else {
                share_items(N * P.K, 1, elems, [&](i64 it) {
                    if (ok) nsc_stats_chunk<T, A>(P, x, it / P.K, it % P.K, scratch, part);
                });
#pragma omp barrier
                /* every item's partial sums exist before any reduction reads them; err is read after the barrier */
                if (!err) {
                    share_items(N, 1, elems, [&](i64 n) {
                        nsc_stats_reduce<T, A>(P, x, n, part, w, b, eps, mean, rstd, coef);
                    });
#pragma omp barrier
                    share_items(N * P.K, 1, elems, [&](i64 it) {
                        nsc_apply_chunk<T, A, ACT>(P, x, res, it / P.K, it % P.K, coef, y);
                    });
                }
            }
            store_fence(P.nts);
        }
    }
    free(part);
    free(coef);
    return err;
}

}  // namespace GN_NS
#endif
