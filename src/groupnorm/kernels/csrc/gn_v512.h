/* Hand-written AVX-512 loops, for the float compute type (float32, bfloat16 and float16 data), in namespace
 * GN_NS::v512. Defines GN_AVX512 and its loops only when the level is compiled with AVX-512 F/BW/VL/DQ
 * (x86-64-v4, and x86-64-v4 + AVX512_BF16); the other levels use the portable loops of the layout headers,
 * which call these where GN_AVX512 is defined. What is here:
 *  - masked loads / stores and non-temporal stores of 16 values of each dtype (one-instruction conversions:
 *    vcvtph2ps / vcvtps2ph for float16, vcvtneps2bf16 for bfloat16 on the AVX512_BF16 level);
 *  - the activations and their derivatives on vectors (exp with vscalefps, 1 / d as rcp14 + one Newton step);
 *  - the contiguous layout's four inner loops (group sums, apply, backward sums, dx);
 *  - channels-last rows (apply, dx, and the four-row sums of the forward and the backward).
 *
 * Why: a channel of a 7x7 or 14x14 map is a run of 49 or 196 values. The compiler's loops pay a scalar tail
 * and, for the sums, a lane combine that costs more than the run itself; here every run is whole vectors of 16
 * plus one masked vector (masked lanes are neither read nor written, so nothing outside the run is touched),
 * the sums stay in registers and fold into double lanes every VBLK values.
 *
 * Same math as the portable code: sums of shifted values in float lanes, folded into double in a fixed order
 * that depends only on the run's length (so results do not depend on the thread count); activations use the
 * same exp polynomial and erf approximation (results within ~1 ulp of the portable code's).
 */
#ifndef GN_V512_H
#define GN_V512_H
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512DQ__)
#define GN_AVX512 1
#include <immintrin.h>
#include <stdint.h>

#include "gn_api.h"
#include "gn_convert.h"

/* GCC 12 warns "__Y may be used uninitialized" inside its own avx512fintrin.h (the _mm512_undefined_* it uses
 * in casts and reductions); the warning is about the header, not this code. */
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace GN_NS {
namespace v512 {

typedef __m512 vf;
enum { W = 16, VBLK = 256 };

static inline __mmask16 tail_mask(i64 n) { return n >= W ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1u); }
static inline vf set1(float v) { return _mm512_set1_ps(v); }

/* masked loads / stores of 16 values (masked-off lanes: not read, loaded as 0; not written) */
static inline vf load(const float *p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
static inline vf load(const bf16_t *p, __mmask16 m) {
    const __m256i h = _mm256_maskz_loadu_epi16(m, p);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
static inline vf load(const f16_t *p, __mmask16 m) { return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p)); }
/* 16 floats as 16 bfloat16 / float16 bit patterns: round to nearest even, NaN stays a quiet NaN */
static inline __m256i pack(vf v, const bf16_t *) {
#ifdef __AVX512BF16__ /* one instruction, the same rounding and NaN quieting as the sequence below */
    return (__m256i)_mm512_cvtneps_pbh(v);
#else
    const __m512i u = _mm512_castps_si512(v);
    const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7fff))), 16);
    const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    r = _mm512_mask_or_epi32(r, nan, _mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));
    return _mm512_cvtepi32_epi16(r);
#endif
}
static inline __m256i pack(vf v, const f16_t *) { return _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
static inline void store(float *p, vf v, __mmask16 m) { _mm512_mask_storeu_ps(p, m, v); }
static inline void store(bf16_t *p, vf v, __mmask16 m) { _mm256_mask_storeu_epi16(p, m, pack(v, p)); }
static inline void store(f16_t *p, vf v, __mmask16 m) { _mm256_mask_storeu_epi16(p, m, pack(v, p)); }
/* non-temporal stores of 16 values to an address aligned to their size (64 bytes float, 32 bytes half): the
 * line is written without being read first (a plain store reads it: one more memory stream) */
static inline void stream(float *p, vf v) { _mm512_stream_ps(p, v); }
static inline void stream(bf16_t *p, vf v) { _mm256_stream_si256((__m256i *)p, pack(v, p)); }
static inline void stream(f16_t *p, vf v) { _mm256_stream_si256((__m256i *)p, pack(v, p)); }
/* elements before p + i is aligned for stream() (p is aligned to its element size, as torch allocates) */
template <typename T> static inline i64 head_to_align(const T *p) {
    const uintptr_t a = (uintptr_t)(sizeof(T) * W);
    return (i64)(((a - ((uintptr_t)p % a)) % a) / sizeof(T));
}
/* body(i, mask) for the vectors i = i0, i0 + 16, ... < n: whole vectors with a constant all-ones mask (plain
 * loads and stores once inlined; masked 16-bit loads and stores measured ~30% slower on bfloat16 runs even
 * with every lane set), then one masked vector for the tail */
template <typename F> static GN_INLINE void for_vectors(i64 i0, i64 n, F body) {
    i64 i = i0;
    for (; i + W <= n; i += W) body(i, (__mmask16)0xffff);
    if (i < n) body(i, tail_mask(n - i));
}
/* o[0 .. n) = the vectors v(i, mask) for i = 0, 16, ...: with nt, a masked plain store up to the first aligned
 * address, non-temporal stores for the whole vectors after it, and a masked plain store for the tail; without
 * nt, plain stores (for_vectors: whole vectors, then a masked tail; masked-off lanes are neither read nor
 * written) */
template <typename T, typename F> static GN_INLINE void store_run(T *o, i64 n, bool nt, F v) {
    i64 i = 0;
    if (nt) {
        const i64 h = head_to_align(o) < n ? head_to_align(o) : n;
        if (h > 0) store(o, v(0, tail_mask(h)), tail_mask(h));
        for (i = h; i + W <= n; i += W) stream(o + i, v(i, (__mmask16)0xffff));
    }
    for_vectors(i, n, [&](i64 j, __mmask16 m) { store(o + j, v(j, m), m); });
}

/* ---------------------------------------------------------------- activations (as gn_math.h's scalar ones) */
static inline vf rcp(vf d) { /* 1 / d for normal d: rcp14 and one Newton step */
    const vf r = _mm512_rcp14_ps(d);
    return _mm512_fmadd_ps(r, _mm512_fnmadd_ps(d, r, set1(1.0f)), r);
}
static inline vf vexp(vf x) { /* 2^n * p(r), n = round(x * log2(e)), r = x - n * ln 2 (two-part constant) */
    x = _mm512_max_ps(set1(-87.0f), x); /* NaN passes through (max / min return the second operand) */
    x = _mm512_min_ps(set1(87.0f), x);
    const vf n = _mm512_roundscale_ps(_mm512_mul_ps(x, set1(1.44269504088896341f)),
                                      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    vf r = _mm512_fnmadd_ps(n, set1(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, set1(-2.12194440e-4f), r);
    vf p = set1(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, set1(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, set1(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, set1(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, set1(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, set1(5.0000001201e-1f));
    p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, set1(1.0f)));
    return _mm512_scalef_ps(p, n); /* p * 2^n in one instruction (vscalefps) */
}
static inline vf verf(vf x) {
    const vf ax = _mm512_abs_ps(x);
    const vf t = rcp(_mm512_fmadd_ps(set1(0.3275911f), ax, set1(1.0f)));
    vf p = set1(1.061405429f);
    p = _mm512_fmadd_ps(p, t, set1(-1.453152027f));
    p = _mm512_fmadd_ps(p, t, set1(1.421413741f));
    p = _mm512_fmadd_ps(p, t, set1(-0.284496736f));
    p = _mm512_fmadd_ps(p, t, set1(0.254829592f));
    const vf e = vexp(_mm512_mul_ps(_mm512_sub_ps(_mm512_setzero_ps(), ax), ax));
    const vf y = _mm512_fnmadd_ps(_mm512_mul_ps(p, t), e, set1(1.0f));
    /* copysign(y, x) */
    const __m512i sign = _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32((int)0x80000000u));
    return _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(_mm512_abs_ps(y)), sign));
}
static inline vf vsigmoid(vf v) { return rcp(_mm512_add_ps(set1(1.0f), vexp(_mm512_sub_ps(_mm512_setzero_ps(), v)))); }

template <int ACT> static inline vf act_f(vf v) {
    if (ACT == GN_ACT_RELU) { /* v < 0 ? 0 : v, NaN passes through */
        return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_LT_OQ), v, _mm512_setzero_ps());
    }
    if (ACT == GN_ACT_SILU) return _mm512_mul_ps(v, vsigmoid(v));
    if (ACT == GN_ACT_GELU) {
        const vf hv = _mm512_mul_ps(set1(0.5f), v);
        return _mm512_fmadd_ps(hv, verf(_mm512_mul_ps(v, set1(0.70710678118654752440f))), hv);
    }
    return v;
}
template <int ACT> static inline vf act_b(vf v, vf g) { /* g * act'(v) */
    if (ACT == GN_ACT_RELU) return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_GT_OQ), g);
    if (ACT == GN_ACT_SILU) {
        const vf s = vsigmoid(v);
        /* s * (1 + v * (1 - s)) */
        const vf inner = _mm512_fmadd_ps(v, _mm512_sub_ps(set1(1.0f), s), set1(1.0f));
        return _mm512_mul_ps(g, _mm512_mul_ps(s, inner));
    }
    if (ACT == GN_ACT_GELU) {
        const vf cdf = _mm512_mul_ps(set1(0.5f), _mm512_add_ps(set1(1.0f),
                                                               verf(_mm512_mul_ps(v, set1(0.70710678118654752440f)))));
        const vf pdf = _mm512_mul_ps(set1(0.39894228040143267794f),
                                     vexp(_mm512_mul_ps(_mm512_mul_ps(set1(-0.5f), v), v)));
        return _mm512_mul_ps(g, _mm512_fmadd_ps(v, pdf, cdf));
    }
    return g;
}

/* ---------------------------------------------------------------- sums */
static inline void fold(vf s, __m512d &lo, __m512d &hi) { /* 16 float lanes added into 16 double lanes */
    lo = _mm512_add_pd(lo, _mm512_cvtps_pd(_mm512_castps512_ps256(s)));
    hi = _mm512_add_pd(hi, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(s), 1))));
}

/* Sums over i in [0, L) of the two terms that f(p, m) computes for the 16 values at p (masked lanes: zero
 * terms): two sets of float lanes, folded into double every VBLK values, summed over lanes at the end. Always
 * inlined: called out of line, the closure (a zmm among its captures) went through the stack once per group,
 * a store-forwarding stall that cost small groups (7x7, 14x14 maps) a fifth of their time. */
template <typename F> static GN_INLINE void sums(i64 L, F f, double *s1o, double *s2o) {
    __m512d d1l = _mm512_setzero_pd(), d1h = d1l, d2l = d1l, d2h = d1l;
    for (i64 i0 = 0; i0 < L; i0 += VBLK) {
        const i64 i1 = i0 + VBLK < L ? i0 + VBLK : L;
        vf a1 = _mm512_setzero_ps(), a2 = a1, b1 = a1, b2 = a1;
        i64 i = i0;
        for (; i + 2 * W <= i1; i += 2 * W) {
            vf u, v;
            f(i, (__mmask16)0xffff, u, v);
            a1 = _mm512_add_ps(a1, u);
            a2 = _mm512_add_ps(a2, v);
            f(i + W, (__mmask16)0xffff, u, v);
            b1 = _mm512_add_ps(b1, u);
            b2 = _mm512_add_ps(b2, v);
        }
        for_vectors(i, i1, [&](i64 j, __mmask16 m) {
            vf u, v;
            f(j, m, u, v);
            a1 = _mm512_add_ps(a1, u);
            a2 = _mm512_add_ps(a2, v);
        });
        fold(_mm512_add_ps(a1, b1), d1l, d1h);
        fold(_mm512_add_ps(a2, b2), d2l, d2h);
    }
    *s1o = _mm512_reduce_add_pd(_mm512_add_pd(d1l, d1h));
    *s2o = _mm512_reduce_add_pd(_mm512_add_pd(d2l, d2h));
}

/* sum of d and d * d, d = x - K */
template <typename T> static inline void shifted_sums(const T *x, i64 L, float K, double *s1o, double *s2o) {
    const vf k = set1(K);
    sums(L, [=](i64 i, __mmask16 m, vf &u, vf &v) {
        const vf d = _mm512_maskz_sub_ps(m, load(x + i, m), k);
        u = d;
        v = _mm512_mul_ps(d, d);
    }, s1o, s2o);
}

/* v rounded to T's precision (the value a store of v to T and a load back give; float: v itself) */
static inline vf round_to(vf v, const float *) { return v; }
static inline vf round_to(vf v, const bf16_t *p) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(pack(v, p)), 16));
}
static inline vf round_to(vf v, const f16_t *p) { return _mm512_cvtph_ps(pack(v, p)); }

/* The backward's two terms of the 16 values at i (masked lanes: zero terms): u = dv, v = dv * (x - mf) with
 * dv = dy * act'((x - mf) * a + bb [+ r]); RES: with the residual r, and dv (rounded to T, the value the sums
 * then use) stored to dr */
template <typename T, int ACT, bool RES>
static GN_INLINE void bwd_terms(const T *dy, const T *x, const T *r, T *dr, i64 i, __mmask16 m, vf vm, vf va, vf vb,
                                vf &u, vf &v) {
    const vf xc = _mm512_maskz_sub_ps(m, load(x + i, m), vm);
    vf pre = _mm512_fmadd_ps(xc, va, vb);
    if (RES) pre = _mm512_add_ps(pre, load(r + i, m));
    vf g = act_b<ACT>(pre, load(dy + i, m)); /* dy = 0 in masked lanes */
    if (RES) {
        g = round_to(g, dr);
        store(dr + i, g, m);
    }
    u = g;
    v = _mm512_mul_ps(g, xc);
}

/* sums over one run of L values of bwd_terms' u and v */
template <typename T, int ACT, bool RES>
static GN_INLINE void bwd_row_sums(const T *dy, const T *x, const T *r, T *dr, i64 L, float mf, float a, float bb,
                                   double *sa, double *sb) {
    const vf vm = set1(mf), va = set1(a), vb = set1(bb);
    sums(L, [=](i64 i, __mmask16 m, vf &u, vf &v) { bwd_terms<T, ACT, RES>(dy, x, r, dr, i, m, vm, va, vb, u, v); },
         sa, sb);
}

/* Lane j < 8 of the result: the sum of the 16 lanes of the j-th argument. Three rounds add lanes pairwise across
 * two vectors (even lanes + odd lanes of the pair, 16 -> 8 values each) and a fourth within one: 21
 * instructions for eight sums where eight separate reductions in double take ~70, and the order of the adds
 * depends only on lane positions. */
static GN_INLINE __m256 hsum8(vf v0, vf v1, vf v2, vf v3, vf v4, vf v5, vf v6, vf v7) {
    const __m512i ev = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i od = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    auto pair = [&](vf a, vf b) {
        return _mm512_add_ps(_mm512_permutex2var_ps(a, ev, b), _mm512_permutex2var_ps(a, od, b));
    };
    const vf q = pair(pair(pair(v0, v1), pair(v2, v3)), pair(pair(v4, v5), pair(v6, v7)));
    return _mm512_castps512_ps256(pair(q, q));
}

/* bwd_row_sums for n <= 4 consecutive channels of S <= VBLK values each (channel j at offset j * S, with its own
 * a[j], bb[j]): each channel's terms in float lanes (at most VBLK / 16 values per lane, as in sums), then the
 * lanes of all of them at once with hsum8; sa[j] = the sum of dv, sb[j] = the sum of dv * (x - mf) - delta * sa[j]
 * (centred on the exact mean, mf = mean - delta). On 4x4 .. 16x16 maps the channel-by-channel reductions in
 * double were most of the backward's time ((32, 128, 4, 4): 4 channels of one vector per group). The results
 * leave as vector stores (scalar stores re-read as a vector stall store forwarding). */
template <typename T, int ACT, bool RES>
static GN_INLINE void bwd_rows_sums4(const T *dy, const T *x, const T *r, T *dr, i64 n, i64 S, float mf,
                                     const float *a, const float *bb, double delta, double *sa, double *sb) {
    const vf vm = set1(mf);
    vf u[4], v[4];
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
        vf su = _mm512_setzero_ps(), sv = su; /* locals: GCC kept u[j], v[j] on the stack inside the loop */
        if (j < n) {
            const vf va = set1(a[j]), vb = set1(bb[j]);
            const i64 o = j * S;
            for_vectors(0, S, [&](i64 i, __mmask16 m) {
                vf tu, tv;
                bwd_terms<T, ACT, RES>(dy + o, x + o, RES ? r + o : r, RES ? dr + o : dr, i, m, vm, va, vb, tu, tv);
                su = _mm512_add_ps(su, tu);
                sv = _mm512_add_ps(sv, tv);
            });
        }
        u[j] = su;
        v[j] = sv;
    }
    /* lanes 0-3: the sums of dv; 4-7: of dv * (x - mf), then minus delta times lanes 0-3 */
    const __m512d d = _mm512_cvtps_pd(hsum8(u[0], u[1], u[2], u[3], v[0], v[1], v[2], v[3]));
    const __m256d da = _mm512_castpd512_pd256(d);
    const __m256d db = _mm256_fnmadd_pd(_mm256_set1_pd(delta), da, _mm512_extractf64x4_pd(d, 1));
    if (n == 4) {
        _mm256_storeu_pd(sa, da);
        _mm256_storeu_pd(sb, db);
    } else {
        const __mmask8 m = (__mmask8)((1u << n) - 1u);
        _mm256_mask_storeu_pd(sa, m, da);
        _mm256_mask_storeu_pd(sb, m, db);
    }
}

/* The per-vector math of every apply / dx loop below (they differ only in where the coefficients come from):
 * act((x - mf) * a + bb [+ r[i]]), and dx = a * dy * act'((x - mf) * a + bb) + (x - mf) * k1 + k2 (a = rstd * w,
 * the derivative of the normalized value by x at a fixed mean and rstd). The
 * residual is loaded here, only with RES (r may be null otherwise). */
template <int ACT, bool RES, typename T>
static inline vf apply_vec(vf x, vf mf, vf a, vf bb, const T *r, i64 i, __mmask16 m) {
    vf v = _mm512_fmadd_ps(_mm512_sub_ps(x, mf), a, bb);
    if (RES) v = _mm512_add_ps(v, load(r + i, m));
    return act_f<ACT>(v);
}
template <int ACT> static inline vf dx_vec(vf x, vf dy, vf mf, vf a, vf bb, vf k1, vf k2) {
    const vf xc = _mm512_sub_ps(x, mf);
    const vf g = act_b<ACT>(_mm512_fmadd_ps(xc, a, bb), dy);
    return _mm512_fmadd_ps(a, g, _mm512_fmadd_ps(xc, k1, k2));
}

/* y = act((x - mf) * a + bb [+ r]) over a run; nt: whole aligned vectors with non-temporal stores (large
 * outputs); RES: with the residual r */
template <typename T, int ACT, bool RES>
static GN_INLINE void row_apply(const T *x, const T *r, T *y, i64 S, float mf, float a, float bb, bool nt) {
    const vf vm = set1(mf), va = set1(a), vb = set1(bb);
    store_run(y, S, nt, [&](i64 s, __mmask16 m) { return apply_vec<ACT, RES>(load(x + s, m), vm, va, vb, r, s, m); });
}

/* dx = a * dv + (x - mf) * k1 + k2 over a run (nt as in row_apply) */
template <typename T, int ACT>
static GN_INLINE void row_dx(const T *x, const T *dy, T *o, i64 S, float mf, float a, float bb, float k1, float k2,
                             bool nt) {
    const vf vm = set1(mf), va = set1(a), vb = set1(bb), vk1 = set1(k1), vk2 = set1(k2);
    store_run(o, S, nt, [&](i64 s, __mmask16 m) {
        return dx_vec<ACT>(load(x + s, m), load(dy + s, m), vm, va, vb, vk1, vk2);
    });
}

/* The two loops above over nch consecutive channels of S values each (a run of nch * S values of the
 * contiguous layout), with per-channel coefficients (the arrays, indexed by channel from 0; k1, k2 are a
 * group's): whole vectors across channel boundaries, each lane with its own channel's coefficients (S >= W, so a
 * vector spans at most two channels), instead of one masked tail vector per channel. A 7x7 map's 49 values
 * took four vectors of arithmetic, here 49 / 16: what matters with an activation (SiLU's exp) on short
 * channels. Same values as the per-channel loops.
 *
 * ChannelCoefs: the coefficient vectors of the vector at j, for j increasing by at most W per call; cur[q] holds
 * the current channel c's coefficient q broadcast, and a vector that crosses into channel c + 1 takes lanes
 * [0, cend - j) from c and the rest from c + 1. Inside a channel (the usual case) that is two compares per
 * vector; a blend is paid only at a channel boundary. */
struct ChannelCoefs {
    enum { NQ = 2 }; /* a and bb */
    const float *p[NQ];
    vf cur[NQ];
    i64 nch, S, c = 0, cend;
    /* the arrays as separate arguments: built from an array argument, the pointers went through a temporary on
     * the stack and were copied with wider loads than their stores, a store-forwarding stall per call (a sixth
     * of a (2, 32, 14, 14) backward's kernel time) */
    ChannelCoefs(i64 nch_, i64 S_, const float *a, const float *bb) : p{a, bb}, nch(nch_), S(S_), cend(S_) {
#pragma GCC unroll 4
        for (int q = 0; q < NQ; ++q) cur[q] = set1(p[q][0]);
    }
    /* the coefficients of the W lanes from j on, into out */
    inline void at(i64 j, vf (&out)[NQ]) {
        if (j >= cend) { /* S >= W: one channel further at most */
            ++c;
            cend += S;
#pragma GCC unroll 4
            for (int q = 0; q < NQ; ++q) cur[q] = set1(p[q][c]);
        }
#pragma GCC unroll 4
        for (int q = 0; q < NQ; ++q) out[q] = cur[q];
        if (j + W > cend && c + 1 < nch) {
            const __mmask16 hi = (__mmask16)(0xffffu << (cend - j));
#pragma GCC unroll 4
            for (int q = 0; q < NQ; ++q) out[q] = _mm512_mask_blend_ps(hi, cur[q], set1(p[q][c + 1]));
        }
    }
};
template <typename T, int ACT, bool RES>
static GN_INLINE void rows_apply(const T *x, const T *r, T *y, i64 nch, i64 S, float mf, const float *a,
                              const float *bb, bool nt) {
    const vf vm = set1(mf);
    ChannelCoefs cc(nch, S, a, bb);
    store_run(y, nch * S, nt, [&](i64 j, __mmask16 m) {
        vf k[ChannelCoefs::NQ];
        cc.at(j, k);
        return apply_vec<ACT, RES>(load(x + j, m), vm, k[0], k[1], r, j, m);
    });
}
template <typename T, int ACT>
static GN_INLINE void rows_dx(const T *x, const T *dy, T *o, i64 nch, i64 S, float mf, const float *a, const float *bb,
                           float k1, float k2, bool nt) {
    const vf vm = set1(mf), vk1 = set1(k1), vk2 = set1(k2);
    ChannelCoefs cc(nch, S, a, bb);
    store_run(o, nch * S, nt, [&](i64 j, __mmask16 m) {
        vf k[ChannelCoefs::NQ];
        cc.at(j, k);
        return dx_vec<ACT>(load(x + j, m), load(dy + j, m), vm, k[0], k[1], vk1, vk2);
    });
}

/* ---------------------------------------------------------------- per-channel coefficients, double lanes
 * gn_math.h's channel_coefs, group sums and parameter gradients, eight channels at a time (masked lanes are
 * neither read nor written). Groups of 4 or 8 channels (C / G on small maps: (32, 128, 4, 4), (8, 256, 7, 7))
 * made the compiler's loops over a group's channels a prologue, a scalar tail and a branch per group: on 4x4
 * maps those per-group loops were a third of the backward. */
static inline __mmask8 mask8(i64 n) { return n >= 8 ? (__mmask8)0xff : (__mmask8)((1u << n) - 1u); }
template <typename T> static inline __m512d load_pd(const T *p, __mmask8 m) { /* exact: T -> float -> double */
    return _mm512_cvtps_pd(_mm512_castps512_ps256(load(p, (__mmask16)m)));
}
template <typename T> static inline void store_pd(T *p, __m512d v, __mmask8 m) { /* rounded to float, then T */
    store(p, _mm512_castps256_ps512(_mm512_cvtpd_ps(v)), (__mmask16)m);
}
/* the sum of the 8 lanes as gn_math.h's sum8 adds its partial sums: ((0 + 1) + (2 + 3)) + ((4 + 5) + (6 + 7)) */
static inline double hsum_pd(__m512d v) {
    v = _mm512_add_pd(v, _mm512_permute_pd(v, 0x55));          /* lane 2k: p[2k] + p[2k + 1] */
    v = _mm512_add_pd(v, _mm512_permutex_pd(v, 0x4e));         /* lane 4k: pairs 4k and 4k + 2 */
    v = _mm512_add_pd(v, _mm512_shuffle_f64x2(v, v, 0x4e));    /* lane 0: the two halves */
    return _mm512_cvtsd_f64(v);
}
/* a[j] = rstd * w[j], bb[j] = b[j] - delta * a[j] (in double), for j < n; w, b: the first
 * channel's (null: 1 and 0). The last n % 8 values leave as scalar stores: the callers read a coefficient back
 * at once (broadcast to a vector), and a load cannot take its value from a masked store in flight; it waited
 * for the store to retire, behind the block's statistics (division, square root): a sixth of the contiguous
 * (2, 32, 14, 14) forward's kernel time, one channel per group. */
template <typename T>
static GN_INLINE void channel_coefs(double rstd, double delta, const T *w, const T *b, i64 n, float *a, float *bb) {
    const __m512d vr = _mm512_set1_pd(rstd), vd = _mm512_set1_pd(delta);
    for (i64 j = 0; j < n; j += 8) {
        const __mmask8 m = mask8(n - j);
        const __m512d ad = w ? _mm512_mul_pd(vr, load_pd(w + j, m)) : vr;
        const __m512d bc = b ? load_pd(b + j, m) : _mm512_setzero_pd();
        const __m256 af = _mm512_cvtpd_ps(ad), bf = _mm512_cvtpd_ps(_mm512_fnmadd_pd(vd, ad, bc));
        if (m == (__mmask8)0xff) {
            _mm256_storeu_ps(a + j, af);
            _mm256_storeu_ps(bb + j, bf);
        } else {
            alignas(32) float ta[8], tb[8];
            _mm256_store_ps(ta, af);
            _mm256_store_ps(tb, bf);
            for (i64 l = 0; l < n - j; ++l) {
                a[j + l] = ta[l];
                bb[j + l] = tb[l];
            }
        }
    }
}
/* pa += w[j..] * a, pb += w[j..] * b (w null: 1), the lanes of m: one step of the weighted sums below */
template <typename T>
static GN_INLINE void wacc(const T *w, i64 j, __mmask8 m, __m512d a, __m512d b, __m512d &pa, __m512d &pb) {
    if (w) {
        const __m512d vw = load_pd(w + j, m);
        pa = _mm512_fmadd_pd(vw, a, pa);
        pb = _mm512_fmadd_pd(vw, b, pb);
    } else {
        pa = _mm512_add_pd(pa, a);
        pb = _mm512_add_pd(pb, b);
    }
}
/* the sums over j < n of w[j] * Ac[j] and w[j] * Bc[j] (w null: 1), in sum8's order (lane l: j = l, l + 8, ...) */
template <typename T>
static GN_INLINE void wsums(const T *w, i64 n, const double *Ac, const double *Bc, double *sa, double *sb) {
    __m512d pa = _mm512_setzero_pd(), pb = pa;
    for (i64 j = 0; j < n; j += 8) {
        const __mmask8 m = mask8(n - j);
        const __m512d va = _mm512_maskz_loadu_pd(m, Ac + j), vb = _mm512_maskz_loadu_pd(m, Bc + j);
        wacc(w, j, m, va, vb, pa, pb);
    }
    *sa = hsum_pd(pa);
    *sb = hsum_pd(pb);
}
/* One group's D channels of a channels-last sample, in one pass (gn_bwd_nsc.h's nsc_bwd_reduce): Ac[j] = the
 * sum over the K chunks (in chunk order) of the chunk sums p1, Bc[j] = that of p2 minus delta * Ac[j] (centred on
 * the exact mean), both stored; sa, sb as wsums. Chunk k's p1 of channel j is at part[k * pstride + j], its p2
 * at part[k * pstride + C + j]. (Centred in a loop of its own and read back by wsums, each group's sums were
 * reloaded right after narrower stores: a store-forwarding stall per group.) */
template <typename T>
static GN_INLINE void nsc_group_sums(const double *part, i64 K, i64 pstride, i64 C, const T *w, i64 D, double delta,
                                     double *Ac, double *Bc, double *sa, double *sb) {
    const __m512d vd = _mm512_set1_pd(delta);
    __m512d pa = _mm512_setzero_pd(), pb = pa;
    for (i64 j = 0; j < D; j += 8) {
        const __mmask8 m = mask8(D - j);
        __m512d a = _mm512_setzero_pd(), b = a;
        for (i64 k = 0; k < K; ++k) {
            a = _mm512_add_pd(a, _mm512_maskz_loadu_pd(m, part + k * pstride + j));
            b = _mm512_add_pd(b, _mm512_maskz_loadu_pd(m, part + k * pstride + C + j));
        }
        b = _mm512_fnmadd_pd(vd, a, b);
        _mm512_mask_storeu_pd(Ac + j, m, a);
        _mm512_mask_storeu_pd(Bc + j, m, b);
        wacc(w, j, m, a, b, pa, pb);
    }
    *sa = hsum_pd(pa);
    *sb = hsum_pd(pb);
}
/* dweight / dbias of the D channels from c0 (gn_math.h's param_grads_group): samples in order per channel */
template <typename T>
static GN_INLINE void param_grads(i64 c0, i64 D, i64 N, i64 C, const double *rstd_g, i64 G, const double *Ab,
                                  const double *Bb, T *dw, T *db) {
    for (i64 j = c0; j < c0 + D; j += 8) {
        const __mmask8 m = mask8(c0 + D - j);
        __m512d sw = _mm512_setzero_pd(), sbias = sw;
        for (i64 n = 0; n < N; ++n) {
            sw = _mm512_fmadd_pd(_mm512_set1_pd(rstd_g[n * G]), _mm512_maskz_loadu_pd(m, Bb + n * C + j), sw);
            sbias = _mm512_add_pd(sbias, _mm512_maskz_loadu_pd(m, Ab + n * C + j));
        }
        if (dw) store_pd(dw + j, sw, m);
        if (db) store_pd(db + j, sbias, m);
    }
}

/* ---------------------------------------------------------------- channels-last (NSC) rows
 * One row of C channels against the per-channel float arrays: the portable nsc_row_apply / nsc_row_dx loops
 * with a masked tail, stored through store_run; the layout headers use them for every float-compute dtype (with whole
 * vectors unmasked they measured as fast as the compiler's loops for float32 and faster for bfloat16). */
template <typename T, int ACT, bool RES>
static inline void nsc_row_apply(const T *xr, const T *rr, const float *mf, const float *a, const float *bb, T *yr,
                                 i64 C, bool nt) {
    store_run(yr, C, nt, [&](i64 c, __mmask16 m) {
        return apply_vec<ACT, RES>(load(xr + c, m), _mm512_maskz_loadu_ps(m, mf + c), _mm512_maskz_loadu_ps(m, a + c),
                                   _mm512_maskz_loadu_ps(m, bb + c), rr, c, m);
    });
}
/* Four consecutive rows (stride C) with each vector's coefficients loaded once for the four (the single-row loop
 * loads three coefficient vectors per data vector: for bfloat16, three times the data's own bytes). Same values
 * as nsc_row_apply. nt: every vector whole and aligned (nt_rows_ok), streamed. */
template <typename T, int ACT, bool RES>
static inline void nsc_row4_apply(const T *xr, const T *rr, const float *mf, const float *a, const float *bb, T *yr,
                                  i64 C, bool nt) {
    for_vectors(0, C, [&](i64 c, __mmask16 m) {
        const vf vm = _mm512_maskz_loadu_ps(m, mf + c), va = _mm512_maskz_loadu_ps(m, a + c),
                 vb = _mm512_maskz_loadu_ps(m, bb + c);
#pragma GCC unroll 4
        for (int r = 0; r < 4; ++r) {
            const vf v = apply_vec<ACT, RES>(load(xr + r * C + c, m), vm, va, vb, RES ? rr + r * C : nullptr, c, m);
            if (nt && m == (__mmask16)0xffff)
                stream(yr + r * C + c, v);
            else
                store(yr + r * C + c, v, m);
        }
    });
}
template <typename T, int ACT>
static inline void nsc_row_dx(const T *xr, const T *gr, const float *mf, const float *a, const float *bb,
                              const float *k1, const float *k2, T *o, i64 C, bool nt) {
    store_run(o, C, nt, [&](i64 c, __mmask16 m) {
        return dx_vec<ACT>(load(xr + c, m), load(gr + c, m), _mm512_maskz_loadu_ps(m, mf + c),
                           _mm512_maskz_loadu_ps(m, a + c), _mm512_maskz_loadu_ps(m, bb + c),
                           _mm512_maskz_loadu_ps(m, k1 + c), _mm512_maskz_loadu_ps(m, k2 + c));
    });
}
/* nsc_row_dx for four consecutive rows (stride C), each vector's five coefficients loaded once for the four (one
 * row at a time the loads of the coefficients were three times those of the data). Same values as nsc_row_dx;
 * nt as in nsc_row4_apply. */
template <typename T, int ACT>
static inline void nsc_row4_dx(const T *xr, const T *gr, const float *mf, const float *a, const float *bb,
                               const float *k1, const float *k2, T *o, i64 C, bool nt) {
    for_vectors(0, C, [&](i64 c, __mmask16 m) {
        const vf vm = _mm512_maskz_loadu_ps(m, mf + c), va = _mm512_maskz_loadu_ps(m, a + c),
                 vb = _mm512_maskz_loadu_ps(m, bb + c), vk1 = _mm512_maskz_loadu_ps(m, k1 + c),
                 vk2 = _mm512_maskz_loadu_ps(m, k2 + c);
#pragma GCC unroll 4
        for (int r = 0; r < 4; ++r) {
            const vf v = dx_vec<ACT>(load(xr + r * C + c, m), load(gr + r * C + c, m), vm, va, vb, vk1, vk2);
            if (nt && m == (__mmask16)0xffff)
                stream(o + r * C + c, v);
            else
                store(o + r * C + c, v, m);
        }
    });
}

/* Four consecutive channels-last rows against the per-channel float accumulators (as the portable
 * nsc_row4_sums / nsc_row4_bwd_sums, same order of additions); the layout headers use them for every float-compute
 * dtype (float16 loads are one vcvtph2ps here but an integer sequence in the portable code). */
template <typename T>
static inline void nsc_row4_sums(const T *row, const float *K, float *f1, float *f2, i64 C) {
    for_vectors(0, C, [&](i64 c, __mmask16 m) {
        const vf k = _mm512_maskz_loadu_ps(m, K + c);
        const vf d0 = _mm512_maskz_sub_ps(m, load(row + c, m), k), d1 = _mm512_maskz_sub_ps(m, load(row + C + c, m), k),
                 d2 = _mm512_maskz_sub_ps(m, load(row + 2 * C + c, m), k),
                 d3 = _mm512_maskz_sub_ps(m, load(row + 3 * C + c, m), k);
        const vf s1 = _mm512_add_ps(_mm512_add_ps(d0, d1), _mm512_add_ps(d2, d3));
        const vf s2 = _mm512_add_ps(_mm512_fmadd_ps(d0, d0, _mm512_mul_ps(d1, d1)),
                                    _mm512_fmadd_ps(d2, d2, _mm512_mul_ps(d3, d3)));
        _mm512_mask_storeu_ps(f1 + c, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, f1 + c), s1));
        _mm512_mask_storeu_ps(f2 + c, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, f2 + c), s2));
    });
}
template <typename T, int ACT, bool RES>
static inline void nsc_row4_bwd_sums(const T *xr, const T *gr, const T *rr, T *dr, const float *mf, const float *a,
                                     const float *bb, float *f1, float *f2, i64 C) {
    for_vectors(0, C, [&](i64 c, __mmask16 m) {
        const vf vm = _mm512_maskz_loadu_ps(m, mf + c), va = _mm512_maskz_loadu_ps(m, a + c),
                 vb = _mm512_maskz_loadu_ps(m, bb + c);
        vf g[4], xc[4];
#pragma GCC unroll 4
        for (int r = 0; r < 4; ++r) {
            xc[r] = _mm512_maskz_sub_ps(m, load(xr + r * C + c, m), vm);
            vf pre = _mm512_fmadd_ps(xc[r], va, vb);
            if (RES) pre = _mm512_add_ps(pre, load(rr + r * C + c, m));
            g[r] = act_b<ACT>(pre, load(gr + r * C + c, m));
            if (RES) {
                g[r] = round_to(g[r], dr);
                store(dr + r * C + c, g[r], m);
            }
        }
        const vf s1 = _mm512_add_ps(_mm512_add_ps(g[0], g[1]), _mm512_add_ps(g[2], g[3]));
        const vf s2 = _mm512_add_ps(_mm512_fmadd_ps(g[0], xc[0], _mm512_mul_ps(g[1], xc[1])),
                                    _mm512_fmadd_ps(g[2], xc[2], _mm512_mul_ps(g[3], xc[3])));
        _mm512_mask_storeu_ps(f1 + c, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, f1 + c), s1));
        _mm512_mask_storeu_ps(f2 + c, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, f2 + c), s2));
    });
}

}  // namespace v512

}  // namespace GN_NS
#endif /* AVX-512 */
#endif
