/* The math of the kernels of one instruction-set level, in the compute type A (float or double):
 * activations and their derivatives, the shifted sums behind the statistics, the affine coefficients, and
 * the backward's per-group coefficients and parameter gradients.
 *
 * Numerics:
 *  - statistics use shifted sums: d = x - K with K one value of the data (per group for NCS, per channel for
 *    NSC), accumulated in float lanes for at most BLK (contiguous runs) or FLUSH (channels-last rows) values
 *    per lane, then folded into double sums; per-channel results are combined exactly (Chan et al.) in
 *    double. So float32 input with mean 1e6 keeps ~1e-6 relative accuracy, and the result does not depend
 *    on the thread count (the work split into chunks depends only on the shape, gn_runtime.h, and partial
 *    sums are combined in a fixed order).
 *  - the normalization is applied as (x - mf) * a + bb with mf the mean rounded to the compute type and the
 *    rounding error folded into bb in double, so large means do not cancel.
 *  - exp and erf for float are our own vectorizable polynomials (the same in gn_v512.h's vector code).
 */
#ifndef GN_MATH_H
#define GN_MATH_H
#include <math.h>
#include <stdint.h>

#include <type_traits>

#include "gn_api.h"
#include "gn_convert.h"
#include "gn_v512.h"

namespace GN_NS {

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
 * a[j] with delta = mean - mf folded in double (a is also dx's factor of dv). One loop
 * over channels that the compiler vectorizes (channel by channel, this setup cost as much as a 7x7 channel's
 * own values). */
template <typename T, typename A>
static inline void channel_coefs(double mean, double rstd, const T *w, const T *b, i64 c0, i64 n, A *GN_R a,
                                 A *GN_R bb) {
    double delta;
    (void)round_mean<A>(mean, &delta);
#ifdef GN_AVX512
    if constexpr (std::is_same<A, float>::value)
        return v512::channel_coefs<T>(rstd, delta, w ? w + c0 : w, b ? b + c0 : b, n, a, bb);
#endif
    for (i64 j = 0; j < n; ++j) {
        const double wc = w ? (double)ld(w + c0 + j) : 1.0, bc = b ? (double)ld(b + c0 + j) : 0.0;
        const double ad = rstd * wc;
        a[j] = (A)ad;
        bb[j] = (A)(bc - delta * ad);
    }
}
enum { CBLK = 256 }; /* channels whose coefficients are computed at once (on the stack) */

/* Sum over j in [0, n) of f(j) in double, as 8 interleaved partial sums added pairwise at the end: an order that
 * depends only on n (so results do not depend on the thread count), and 8 independent chains of adds instead
 * of one (the loops over a group's channels were bound by the latency of one scalar add per channel). */
template <typename F> static GN_INLINE double sum8(i64 n, F f) {
    double p[8] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
    i64 j = 0;
    for (; j + 8 <= n; j += 8)
        for (int l = 0; l < 8; ++l) p[l] += f(j + l);
    for (int l = 0; j + l < n; ++l) p[l] += f(j + l);
    return ((p[0] + p[1]) + (p[2] + p[3])) + ((p[4] + p[5]) + (p[6] + p[7]));
}

enum { FLUSH = 64 }; /* channels-last: rows summed in the compute type before folding into double */

/* ---------------------------------------------------------------- backward coefficients */
/* From per-channel sums (A_c = sum dv, B_c = sum dv * (x - mean)) of one group: dx = a*dv + (x - mf)*k1 + k2,
 * with sa = sum_c w_c A_c, sb = sum_c w_c B_c over the group's D channels (w_c = 1 without weight), M = D * S,
 * k1 = -rstd^3 sb / M and k2 = -rstd sa / M - delta k1 (the latter in terms of x - mf, mf = mean - delta). */
struct GroupBwd { double k1, k2; };
static GN_INLINE GroupBwd group_bwd_from_sums(double sa, double sb, i64 M, double rstd, double delta) {
    GroupBwd r;
    r.k1 = -rstd * rstd * rstd * sb / (double)M;
    r.k2 = -rstd * sa / (double)M - delta * r.k1;
    return r;
}
template <typename T>
static GN_INLINE GroupBwd group_bwd_coef(const T *w, i64 c0, i64 D, i64 S, const double *Ac, const double *Bc,
                                         double rstd, double delta) {
    double sa, sb;
#ifdef GN_AVX512
    if constexpr (!std::is_same<T, double>::value) {
        v512::wsums<T>(w ? w + c0 : w, D, Ac, Bc, &sa, &sb);
        return group_bwd_from_sums(sa, sb, D * S, rstd, delta);
    }
#endif
    sa = w ? sum8(D, [&](i64 cc) { return (double)ld(w + c0 + cc) * Ac[cc]; }) : sum8(D, [&](i64 cc) { return Ac[cc]; });
    sb = w ? sum8(D, [&](i64 cc) { return (double)ld(w + c0 + cc) * Bc[cc]; }) : sum8(D, [&](i64 cc) { return Bc[cc]; });
    return group_bwd_from_sums(sa, sb, D * S, rstd, delta);
}

/* dweight[c] = sum_n rstd[n, g] * B[n, c], dbias[c] = sum_n A[n, c] (fixed order over n), for the channels of
 * group g; called for every g inside a parallel region (omp for), after all the per-sample sums exist. */
template <typename T>
static void param_grads_group(i64 g, i64 N, i64 C, i64 G, const double *rstd, const double *Ab, const double *Bb,
                              T *dw, T *db) {
    const i64 D = C / G;
#ifdef GN_AVX512
    if constexpr (!std::is_same<T, double>::value) return v512::param_grads<T>(g * D, D, N, C, rstd + g, G, Ab, Bb, dw, db);
#endif
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

}  // namespace GN_NS
#endif
