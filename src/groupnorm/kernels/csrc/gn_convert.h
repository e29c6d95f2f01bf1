/* Element types and their conversions to the compute type, for the kernels of one instruction-set level.
 *
 * Every kernel header is compiled once per level (gn_isa_*.cpp defines GN_NS, a namespace per level, and
 * includes gn_level.h with that level's -march flags), so each opens namespace GN_NS itself.
 *  - bf16_t / f16_t: bfloat16 and IEEE half as their 16-bit patterns;
 *  - ld / st: an element to / from the compute type (float for fp32 / bf16 / fp16, double for fp64), rounding
 *    to nearest even on the way down and keeping NaN a NaN, with integer arithmetic only (so the loops
 *    vectorize on every level; GCC 12 does not vectorize _Float16 conversions without AVX512-FP16);
 *  - round_to<T>(v): v rounded to T's precision; Acc<T>: the compute type.
 */
#ifndef GN_CONVERT_H
#define GN_CONVERT_H
#include <stdint.h>

#include "gn_api.h"

#ifndef GN_NS
#error "define GN_NS (the instruction-set level's namespace) before including the kernel headers"
#endif
#define GN_R __restrict
/* per-row helpers called once per channel or group: out of line, their call, spills and vzeroupper cost as much
 * as a short channel's (4x4, 7x7 map) own arithmetic */
#define GN_INLINE inline __attribute__((always_inline))

namespace GN_NS {

typedef int64_t i64;

struct bf16_t { uint16_t v; };
struct f16_t { uint16_t v; };

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

/* A call's arguments (gn_api.h's structs) with the data pointers as x's element type T: the one place where
 * the C API's void pointers are cast. Validated by gn_dispatch.cpp; mean / rstd are never null here. */
template <typename T> struct FwdArgs {
    i64 N, C, S, G;
    int nt;
    double eps;
    const T *x, *w, *b, *r;
    T *y;
    double *mean, *rstd;
    explicit FwdArgs(const gn_fwd_args &a)
        : N(a.sh.N), C(a.sh.C), S(a.sh.S), G(a.sh.G), nt(a.sh.nthreads), eps(a.eps), x((const T *)a.x),
          w((const T *)a.w), b((const T *)a.b), r((const T *)a.r), y((T *)a.y), mean(a.mean), rstd(a.rstd) {}
};
/* r / dr: null unless the activation is not none (with none the residual does not enter the backward). */
template <typename T> struct BwdArgs {
    i64 N, C, S, G;
    int nt;
    const T *dy, *x, *r, *w, *b;
    const double *mean, *rstd;
    T *dr, *dx, *dw, *db;
    explicit BwdArgs(const gn_bwd_args &a)
        : N(a.sh.N), C(a.sh.C), S(a.sh.S), G(a.sh.G), nt(a.sh.nthreads), dy((const T *)a.dy), x((const T *)a.x),
          r(a.sh.act == GN_ACT_NONE ? nullptr : (const T *)a.r), w((const T *)a.w), b((const T *)a.b), mean(a.mean),
          rstd(a.rstd), dr(a.sh.act == GN_ACT_NONE ? nullptr : (T *)a.dr), dx((T *)a.dx), dw((T *)a.dw),
          db((T *)a.db) {}
};

}  // namespace GN_NS
#endif
