/* Forward, contiguous layout (N, C, S): per (sample, group) block, the shifted sums over its D * S values
 * (one contiguous run), the statistics, then y = act((x - mf) * a + bb [+ r]) channel by channel (or, for
 * short channels on AVX-512, as one run across channel boundaries); short blocks a batch at a time (statistics
 * of all, then outputs). Batches are shared among the threads by share_items (gn_runtime.h); a block is read
 * twice, the second time from cache when it fits.
 */
#ifndef GN_FWD_NCS_H
#define GN_FWD_NCS_H
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

/* Contiguous rows: v = (x - mf) * a + bb [+ r] over one channel's S values. */
template <typename T, typename A, int ACT, bool RES>
static GN_INLINE void ncs_row_apply(const T *GN_R xr, const T *GN_R rr, T *GN_R yr, i64 S, A mf, A a, A bb, bool nt) {
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


template <typename T, typename A, int ACT, bool RES>
static GN_INLINE void ncs_rows_apply(const T *xr, const T *rr, T *yr, i64 nch, i64 S, A mf, const A *a, const A *bb,
                                  bool nt) {
#ifdef GN_AVX512
    if constexpr (std::is_same<A, float>::value)
        if (ncs_rows_flat(S)) return v512::rows_apply<T, ACT, RES>(xr, rr, yr, nch, S, mf, a, bb, nt);
#endif
    for (i64 j = 0; j < nch; ++j)
        ncs_row_apply<T, A, ACT, RES>(xr + j * S, RES ? rr + j * S : nullptr, yr + j * S, S, mf, a[j], bb[j], nt);
}

template <typename T, int ACT>
static int fwd_ncs(const FwdArgs<T> &p) {
    typedef typename Acc<T>::type A;
    const i64 N = p.N, C = p.C, S = p.S, G = p.G;
    const T *x = p.x, *w = p.w, *b = p.b, *r = p.r;
    T *y = p.y;
    double *mean = p.mean, *rstd = p.rstd;
    const double eps = p.eps;
    int nt = p.nt;
    const i64 D = C / G, L = D * S, items = N * G;
    nt = nthreads_for(items, nt, N * C * S);
    /* blocks BATCH at a time (as in the backward): the statistics of all of them, then their outputs, so that
     * short blocks' chains (sums -> reductions -> sqrt and division in double) overlap */
    const NcsBatches bp = ncs_batches(L, items, nt);
    const i64 BATCH = bp.batch;
    const bool nts = nt_output<T>(N * C * S, nt, caches());
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
    FtzGuard ftz;
    share_items(bp.count, bp.chunk, N * C * S, [&](i64 bt) {
        const i64 it0 = bt * BATCH, nb = items - it0 < BATCH ? items - it0 : BATCH;
        double mus[NCS_BATCH_MAX], rss[NCS_BATCH_MAX];
        for (i64 q = 0; q < nb; ++q) {
            /* block it = (n, g) starts at (n * C + g * D) * S = it * L */
            const T *xg = x + (it0 + q) * L;
            const A K = ld(xg);
            double s1, s2;
            shifted_sums<T, A>(xg, L, K, &s1, &s2);
            const double m1 = s1 / (double)L;
            double var = s2 / (double)L - m1 * m1;
            if (!(var > 0.0)) var = var != var ? var : 0.0;
            mus[q] = (double)K + m1;
            rss[q] = 1.0 / sqrt(var + eps);
        }
        for (i64 q = 0; q < nb; ++q) {
            /* the division for g (its channels' weights) is off the path of the first loads */
            const i64 it = it0 + q, g = it % G;
            const T *xg = x + it * L;
            T *yg = y + it * L;
            const double mu = mus[q], rs = rss[q];
            mean[it] = mu;
            rstd[it] = rs;
            double delta;
            const A mf = round_mean<A>(mu, &delta);
            for (i64 cb = 0; cb < D; cb += CBLK) {
                const i64 nc = D - cb < CBLK ? D - cb : CBLK;
                A ca[CBLK], cbb[CBLK];
                channel_coefs<T, A>(mu, rs, w, b, g * D + cb, nc, ca, cbb);
                const i64 o = cb * S;
                if (r)
                    ncs_rows_apply<T, A, ACT, true>(xg + o, r + it * L + o, yg + o, nc, S, mf, ca, cbb, nts);
                else
                    ncs_rows_apply<T, A, ACT, false>(xg + o, nullptr, yg + o, nc, S, mf, ca, cbb, nts);
            }
        }
    });
    store_fence(nts);
    }
    return GN_OK;
}

}  // namespace GN_NS
#endif
