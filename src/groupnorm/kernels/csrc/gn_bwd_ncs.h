/* Backward, contiguous layout (N, C, S): per (sample, group) block, per channel the sums A_c = sum dv and
 * B_c = sum dv * (x - mean) with dv = dy * act'(v) recomputed from x (gn_api.h), then the group's dx
 * coefficients (gn_math.h) and dx in a second pass over the block; short blocks a batch at a time (the sums
 * of all, their coefficients, then their dx); dweight / dbias from the per-sample sums after a barrier.
 */
#ifndef GN_BWD_NCS_H
#define GN_BWD_NCS_H
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

/* Over one run of one channel: sums of dv and dv * (x - mf), dv = dy * act'((x - mf) * a + bb [+ r])
 * (lane_sums); RES: dv (rounded to T) stored to dr. */
template <typename T, typename A, int ACT, bool RES>
static GN_INLINE void bwd_row_sums(const T *GN_R dy, const T *GN_R x, const T *GN_R r, T *GN_R dr, i64 L, A mf, A a, A bb,
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
static GN_INLINE void bwd_row_sums_any(const T *dy, const T *x, const T *r, T *dr, i64 L, A mf, A a, A bb, double *sa,
                                    double *sb) {
    if constexpr (ACT != GN_ACT_NONE)
        if (dr) return bwd_row_sums<T, A, ACT, true>(dy, x, r, dr, L, mf, a, bb, sa, sb);
    bwd_row_sums<T, A, ACT, false>(dy, x, nullptr, nullptr, L, mf, a, bb, sa, sb);
}

/* The sums of nch consecutive channels of S values (channel j at j * S, coefficients a[j], bb[j]): sa[j] = the sum
 * of dv, sb[j] = the sum of dv * (x - mf) - delta * sa[j] (centred on the exact mean). On AVX-512 with S <= VBLK
 * four channels at a time (v512::bwd_rows_sums4), else channel by channel. */
template <typename T, typename A, int ACT>
static GN_INLINE void bwd_rows_sums_any(const T *dy, const T *x, const T *r, T *dr, i64 nch, i64 S, A mf,
                                        const A *a, const A *bb, double delta, double *sa, double *sb) {
#ifdef GN_AVX512
    if constexpr (std::is_same<A, float>::value)
        if (S <= v512::VBLK) {
            for (i64 j = 0; j < nch; j += 4) {
                const i64 n = nch - j < 4 ? nch - j : 4, o = j * S;
                if constexpr (ACT != GN_ACT_NONE)
                    if (dr) {
                        v512::bwd_rows_sums4<T, ACT, true>(dy + o, x + o, r + o, dr + o, n, S, mf, a + j, bb + j,
                                                           delta, sa + j, sb + j);
                        continue;
                    }
                v512::bwd_rows_sums4<T, ACT, false>(dy + o, x + o, nullptr, nullptr, n, S, mf, a + j, bb + j, delta,
                                                    sa + j, sb + j);
            }
            return;
        }
#endif
    for (i64 j = 0; j < nch; ++j) {
        const i64 o = j * S;
        double s1, s2;
        bwd_row_sums_any<T, A, ACT>(dy + o, x + o, r ? r + o : nullptr, dr ? dr + o : nullptr, S, mf, a[j], bb[j],
                                    &s1, &s2);
        sa[j] = s1;
        sb[j] = s2 - delta * s1;
    }
}

template <typename T, typename A, int ACT>
static GN_INLINE void ncs_row_dx(const T *GN_R xr, const T *GN_R gr, T *GN_R o, i64 S, A mf, A a, A bb, A k1, A k2,
                                 bool nt) {
#ifdef GN_AVX512
    if constexpr (std::is_same<A, float>::value) return v512::row_dx<T, ACT>(xr, gr, o, S, mf, a, bb, k1, k2, nt);
#endif
    (void)nt;
    for (i64 s = 0; s < S; ++s) {
        A xc = ld(xr + s) - mf;
        A g = act_b<ACT, A>(xc * a + bb, ld(gr + s));
        st(o + s, a * g + xc * k1 + k2);
    }
}

template <typename T, typename A, int ACT>
static GN_INLINE void ncs_rows_dx(const T *xr, const T *gr, T *o, i64 nch, i64 S, A mf, const A *a, const A *bb,
                                  A k1, A k2, bool nt) {
#ifdef GN_AVX512
    if constexpr (std::is_same<A, float>::value)
        if (ncs_rows_flat(S)) return v512::rows_dx<T, ACT>(xr, gr, o, nch, S, mf, a, bb, k1, k2, nt);
#endif
    for (i64 j = 0; j < nch; ++j)
        ncs_row_dx<T, A, ACT>(xr + j * S, gr + j * S, o + j * S, S, mf, a[j], bb[j], k1, k2, nt);
}

/* ================================================================ backward, NCS (contiguous) */
/* With a residual (r, and ACT not none): the sums pass also stores dv to dr, and dx is computed from dv (as
 * for no activation); with ACT none the residual does not enter the backward (dv = dy). */
template <typename T, int ACT>
static int bwd_ncs(const BwdArgs<T> &p) {
    typedef typename Acc<T>::type A;
    const i64 N = p.N, C = p.C, S = p.S, G = p.G;
    const T *dy = p.dy, *x = p.x, *r = p.r, *w = p.w, *b = p.b;
    const double *mean = p.mean, *rstd = p.rstd;
    T *dr = p.dr, *dx = p.dx, *dw = p.dw, *db = p.db;
    int nt = p.nt;
    const i64 D = C / G, items = N * G;
    double *Ab = (double *)malloc(sizeof(double) * (size_t)(N * C * 2));
    if (!Ab) return GN_ENOMEM;
    double *Bb = Ab + N * C;
    nt = nthreads_for(items, nt, N * C * S);
    /* blocks are taken BATCH at a time: the sums of all of them, then their group coefficients, then their dx.
     * Block by block, each short block's dx waited on its own chain of sums -> reductions -> stores -> group
     * coefficients (~100 cycles, and the coefficients' loads of the sums just stored stalled the pipeline); in
     * phases the blocks' chains overlap. */
    const NcsBatches bp = ncs_batches(D * S, items, nt);
    const i64 BATCH = bp.batch;
    const bool nts = dx && nt_output<T>(N * C * S, nt, caches());
    int err = GN_OK;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
    FtzGuard ftz;
    /* per block of the batch: per-channel a, bb (planar), computed for the sums and reused for dx; and the
     * block's mf, k1, k2 */
    ThreadScratch<A> ts(BATCH * (2 * D + 3), &err);
    A *cf = ts.p;
    share_items(bp.count, bp.chunk, N * C * S, [&](i64 bt) {
        if (!cf) return;
        const i64 it0 = bt * BATCH, nb = items - it0 < BATCH ? items - it0 : BATCH;
        A *kk = cf + BATCH * 2 * D; /* mf, k1, k2 of block q at 3 * q */
        double deltas[NCS_BATCH_MAX];
        for (i64 q = 0; q < nb; ++q) {
            /* block it = (n, g): its channels n * C + g * D .. are it * D .. (no division on the loads' path) */
            const i64 it = it0 + q, g = it % G, c0 = g * D, nc0 = it * D;
            const double mu = mean[it], rs = rstd[it];
            double delta;
            const A mf = round_mean<A>(mu, &delta);
            A *ca = cf + q * 2 * D, *cbb = ca + D;
            channel_coefs<T, A>(mu, rs, w, b, c0, D, ca, cbb);
            const i64 off = nc0 * S;
            bwd_rows_sums_any<T, A, ACT>(dy + off, x + off, r ? r + off : nullptr, dr ? dr + off : nullptr, D, S, mf,
                                         ca, cbb, delta, Ab + nc0, Bb + nc0);
            kk[3 * q] = mf;
            deltas[q] = delta;
        }
        if (!dx) return;
        for (i64 q = 0; q < nb; ++q) {
            const i64 it = it0 + q, c0 = it % G * D, nc0 = it * D;
            const GroupBwd k = group_bwd_coef<T>(w, c0, D, S, Ab + nc0, Bb + nc0, rstd[it], deltas[q]);
            kk[3 * q + 1] = (A)k.k1;
            kk[3 * q + 2] = (A)k.k2;
        }
        for (i64 q = 0; q < nb; ++q) {
            const i64 off = (it0 + q) * D * S;
            const A *ca = cf + q * 2 * D, *cbb = ca + D, mf = kk[3 * q], k1 = kk[3 * q + 1], k2 = kk[3 * q + 2];
            if constexpr (ACT != GN_ACT_NONE)
                if (dr) { /* dv is in dr: dx as for no activation */
                    ncs_rows_dx<T, A, GN_ACT_NONE>(x + off, dr + off, dx + off, D, S, mf, ca, cbb, k1, k2, nts);
                    continue;
                }
            ncs_rows_dx<T, A, ACT>(x + off, dy + off, dx + off, D, S, mf, ca, cbb, k1, k2, nts);
        }
    });
#pragma omp barrier
    /* every sample's sums exist; err is read after the barrier (the same value in every thread) */
    if (!err && (dw || db)) {
#pragma omp for schedule(static)
        for (i64 g = 0; g < G; ++g) param_grads_group<T>(g, N, C, G, rstd, Ab, Bb, dw, db);
    }
    store_fence(nts);
    }
    free(Ab);
    return err;
}

}  // namespace GN_NS
#endif
