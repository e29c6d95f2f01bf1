/* Backward, channels-last layout (N, S, C): the forward's chunks and schedules (gn_runtime.h's NscPlan);
 * per chunk the per-channel sums of dv and dv * (x - mf), per sample their reduction into each group's dx
 * coefficients, then dx row by row; dweight / dbias after the last barrier.
 */
#ifndef GN_BWD_NSC_H
#define GN_BWD_NSC_H
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
static inline void nsc_row4_dx(const T *GN_R xr, const T *GN_R gr, const A *GN_R mf, const A *GN_R a,
                               const A *GN_R bb, const A *GN_R k1, const A *GN_R k2, T *GN_R o, i64 C, bool nt) {
#ifdef GN_AVX512
    if constexpr (std::is_same<A, float>::value)
        return v512::nsc_row4_dx<T, ACT>(xr, gr, mf, a, bb, k1, k2, o, C, nt);
#endif
    (void)nt;
    for (i64 c = 0; c < C; ++c) {
        const A m = mf[c], ac = a[c], b = bb[c], q1 = k1[c], q2 = k2[c];
#pragma GCC unroll 4
        for (int r = 0; r < 4; ++r) {
            const A xc = ld(xr + r * C + c) - m;
            const A g = act_b<ACT, A>(xc * ac + b, ld(gr + r * C + c));
            st(o + r * C + c, ac * g + xc * q1 + q2);
        }
    }
}
template <typename T, typename A, int ACT>
static inline void nsc_row_dx(const T *GN_R xr, const T *GN_R gr, const A *GN_R mf, const A *GN_R a,
                              const A *GN_R bb, const A *GN_R k1, const A *GN_R k2, T *GN_R o, i64 C, bool nt) {
#ifdef GN_AVX512
    if constexpr (std::is_same<A, float>::value)
        return v512::nsc_row_dx<T, ACT>(xr, gr, mf, a, bb, k1, k2, o, C, nt);
#endif
    (void)nt;
    for (i64 c = 0; c < C; ++c) {
        A xc = ld(xr + c) - mf[c];
        A g = act_b<ACT, A>(xc * a[c] + bb[c], ld(gr + c));
        st(o + c, a[c] * g + xc * k1[c] + k2[c]);
    }
}

/* ================================================================ backward, NSC (channels-last) */
/* Same chunking and schedules as the NSC forward. coef[n][5][C] = (mf, a, bb, k1, k2):
 * dx = a * dv + (x - mf) * k1 + k2. */
template <typename T, typename A>
static void nsc_bwd_coef_init(const NscPlan &P, i64 n, const double *mean, const double *rstd, const T *w,
                              const T *b, A *coef) {
    const i64 C = P.C;
    A *q = coef + n * 5 * C;
    for (i64 g = 0; g < P.G; ++g) {
        const i64 ng = n * P.G + g, c0 = g * P.D;
        double delta;
        const A mf = round_mean<A>(mean[ng], &delta);
        for (i64 c = c0; c < c0 + P.D; ++c) q[c] = mf;
        channel_coefs<T, A>(mean[ng], rstd[ng], w, b, c0, P.D, q + C + c0, q + 2 * C + c0);
    }
}

template <typename T, typename A, int ACT, bool RES>
static void nsc_bwd_chunk_sums(const NscPlan &P, const T *dy, const T *x, const T *res, T *dres, i64 n, i64 k,
                               const A *coef, A *scratch, double *part) {
    const i64 C = P.C, r0 = k * P.R, r1 = r0 + P.R < P.S ? r0 + P.R : P.S;
    const A *mf = coef + n * 5 * C, *a = mf + C, *bb = mf + 2 * C;
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

/* Per-channel sums of sample n (Ab, Bb: the chunks' sums in chunk order, B centred on the exact mean) and the dx
 * coefficients k1, k2 of its groups. */
template <typename T, typename A>
static void nsc_bwd_reduce(const NscPlan &P, i64 n, const double *part, const double *mean, const double *rstd,
                           const T *w, double *Ab, double *Bb, A *coef) {
    const i64 C = P.C, D = P.D;
    A *q = coef + n * 5 * C;
    double *GN_R sa = Ab + n * C, *GN_R sb = Bb + n * C;
    const double *pn = part + n * P.K * 2 * C;
#ifdef GN_AVX512
    constexpr bool fused = std::is_same<A, float>::value;
#else
    constexpr bool fused = false;
#endif
    if (!fused) {
        for (i64 c = 0; c < C; ++c) { sa[c] = 0.0; sb[c] = 0.0; }
        for (i64 k = 0; k < P.K; ++k) { /* chunk order, channels vectorized */
            const double *GN_R p = pn + k * 2 * C;
            for (i64 c = 0; c < C; ++c) { sa[c] += p[c]; sb[c] += p[C + c]; }
        }
    }
    for (i64 g = 0; g < P.G; ++g) {
        const i64 c0 = g * D, ng = n * P.G + g;
        double delta;
        (void)round_mean<A>(mean[ng], &delta);
        GroupBwd kk;
#ifdef GN_AVX512
        if constexpr (fused) {
            double ws_a, ws_b;
            v512::nsc_group_sums<T>(pn + c0, P.K, 2 * C, C, w ? w + c0 : w, D, delta, sa + c0, sb + c0, &ws_a, &ws_b);
            kk = group_bwd_from_sums(ws_a, ws_b, D * P.S, rstd[ng], delta);
        } else
#endif
        {
            for (i64 c = c0; c < c0 + D; ++c) sb[c] -= delta * sa[c]; /* centred on the exact mean */
            kk = group_bwd_coef<T>(w, c0, D, P.S, sa + c0, sb + c0, rstd[ng], delta);
        }
        for (i64 cc = 0; cc < D; ++cc) {
            q[3 * C + c0 + cc] = (A)kk.k1;
            q[4 * C + c0 + cc] = (A)kk.k2;
        }
    }
}

template <typename T, typename A, int ACT>
static void nsc_bwd_dx_chunk(const NscPlan &P, const T *dy, const T *x, i64 n, i64 k, const A *coef, T *dx) {
    const i64 C = P.C, r0 = k * P.R, r1 = r0 + P.R < P.S ? r0 + P.R : P.S;
    const A *mf = coef + n * 5 * C, *a = mf + C, *bb = mf + 2 * C, *k1 = mf + 3 * C, *k2 = mf + 4 * C;
    i64 r = r0;
    for (; r + 4 <= r1; r += 4) {
        const i64 off = (n * P.S + r) * C;
        nsc_row4_dx<T, A, ACT>(x + off, dy + off, mf, a, bb, k1, k2, dx + off, C, P.nts);
    }
    for (; r < r1; ++r) {
        const i64 off = (n * P.S + r) * C;
        nsc_row_dx<T, A, ACT>(x + off, dy + off, mf, a, bb, k1, k2, dx + off, C, P.nts);
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
static int bwd_nsc(const BwdArgs<T> &p) {
    typedef typename Acc<T>::type A;
    const i64 N = p.N, C = p.C, S = p.S, G = p.G;
    const T *dy = p.dy, *x = p.x, *res = p.r, *w = p.w, *b = p.b;
    const double *mean = p.mean, *rstd = p.rstd;
    T *dres = p.dr, *dx = p.dx, *dw = p.dw, *db = p.db;
    const Caches cs = caches();
    NscPlan P = nsc_plan(N, C, S, G, (i64)sizeof(T), p.nt, cs);
    P.nts = dx && nt_output<T>(N * S * C, P.nt, cs) && nt_rows_ok(dx, C);
    A *coef = (A *)malloc(sizeof(A) * (size_t)(N * C * 5));
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
            const i64 elems = N * S * C;
            if (P.per_sample) {
                share_items(N, 1, elems, [&](i64 n) {
                    if (!ok) return;
                    nsc_bwd_coef_init<T, A>(P, n, mean, rstd, w, b, coef);
                    for (i64 k = 0; k < P.K; ++k) nsc_bwd_sums_any<T, A, ACT>(P, dy, x, res, dres, n, k, coef, scratch, part);
                    nsc_bwd_reduce<T, A>(P, n, part, mean, rstd, w, Ab, Bb, coef);
                    if (dx)
                        for (i64 k = 0; k < P.K; ++k) nsc_bwd_dx_any<T, A, ACT>(P, dy, x, dres, n, k, coef, dx);
                });
            } else {
                share_items(N, 1, elems, [&](i64 n) { nsc_bwd_coef_init<T, A>(P, n, mean, rstd, w, b, coef); });
#pragma omp barrier
                share_items(N * P.K, 1, elems, [&](i64 it) {
                    if (ok) nsc_bwd_sums_any<T, A, ACT>(P, dy, x, res, dres, it / P.K, it % P.K, coef, scratch, part);
                });
#pragma omp barrier
                if (!err) { /* read after a barrier: the same value in every thread */
                    share_items(N, 1, elems, [&](i64 n) { nsc_bwd_reduce<T, A>(P, n, part, mean, rstd, w, Ab, Bb, coef); });
                    if (dx) {
#pragma omp barrier
                        share_items(N * P.K, 1, elems, [&](i64 it) {
                            nsc_bwd_dx_any<T, A, ACT>(P, dy, x, dres, it / P.K, it % P.K, coef, dx);
                        });
                    }
                }
            }
            if (dw || db) {
#pragma omp barrier
                /* all sums exist; the region's closing barrier follows */
                if (!err) {
#pragma omp for schedule(static) nowait
                    for (i64 g = 0; g < G; ++g) param_grads_group<T>(g, N, C, G, rstd, Ab, Bb, dw, db);
                }
            }
            store_fence(P.nts);
        }
    }
    free(coef);
    free(part);
    free(Ab);
    return err;
}

}  // namespace GN_NS
#endif
