/* groupnorm compiled CPU kernels: the C ABI (no PyTorch headers; loaded from Python with ctypes).
 *
 * Math (per sample n and group g of D = C / G channels, M = D * S elements, S = prod(spatial)):
 *   mean = E[x],  var = E[(x - mean)^2] (biased),  rstd = 1 / sqrt(var + eps)
 *   v = (x - mean) * rstd * w[c] + b[c] [+ r],  y = act(v),  act in {identity, relu, silu, gelu(erf)}
 *   r: an optional residual of x's shape, layout and dtype (y = act(GN(x) + r), a ResNet block's end)
 * Backward, with dv = dy * act'(v) recomputed from x, r and the saved mean / rstd (v is never stored):
 *   db[c] = sum_{n,s} dv,  dw[c] = sum_{n,s} dv * xhat,  xhat = (x - mean) * rstd
 *   dx = rstd * (w[c] dv - mean_g(w dv) - xhat * mean_g(w dv xhat)),  dr = dv
 *
 * Layouts: GN_LAYOUT_NCS = contiguous (N, C, S); GN_LAYOUT_NSC = channels-last (N, S, C).
 * Dtypes: fp32, fp64, bf16, fp16 (half types and fp32 accumulate in fp32 lanes folded into fp64 sums).
 * mean / rstd are always float64 arrays of N * G values. w / b (may be NULL) and dw / db have x's dtype.
 * All functions return GN_OK or an error code (nothing is written out of bounds on error).
 */
#ifndef GROUPNORM_GN_API_H
#define GROUPNORM_GN_API_H
#include <stdint.h>

#if defined(__GNUC__)
#define GN_EXPORT __attribute__((visibility("default")))
#else
#define GN_EXPORT
#endif

#ifdef __cplusplus
extern "C" {
#endif

enum { GN_F32 = 0, GN_F64 = 1, GN_BF16 = 2, GN_F16 = 3 };
enum { GN_LAYOUT_NCS = 0, GN_LAYOUT_NSC = 1 };
enum { GN_ACT_NONE = 0, GN_ACT_RELU = 1, GN_ACT_SILU = 2, GN_ACT_GELU = 3 };
enum { GN_OK = 0, GN_EINVAL = 1, GN_ENOMEM = 2 };
/* GN_ISA_AVX512BF16: AVX-512 plus the AVX512_BF16 conversions (Sapphire Rapids, Zen 4), used for bfloat16 data
 * only (other dtypes run the AVX-512 level's code). */
enum { GN_ISA_AUTO = -1, GN_ISA_BASE = 0, GN_ISA_AVX2 = 1, GN_ISA_AVX512 = 2, GN_ISA_AVX512BF16 = 3 };

GN_EXPORT int gn_abi_version(void);
/* Choose the code path: GN_ISA_AUTO picks the best the CPU supports; a level the CPU lacks gives GN_EINVAL.
 * Returns the level now in use (>= 0) or a negative error. */
GN_EXPORT int gn_set_isa(int level);
GN_EXPORT int gn_get_isa(void);
/* Highest level compiled into this library (depends on the build machine's architecture). */
GN_EXPORT int gn_max_compiled_isa(void);

/* mean and rstd may both be NULL (statistics not returned: inference); r may be NULL (no residual). */
GN_EXPORT int gn_forward(int dtype, int layout, int64_t N, int64_t C, int64_t S, int64_t G,
               const void *x, const void *w, const void *b, const void *r, double eps, int act,
               void *y, double *mean, double *rstd, int nthreads);

/* dx, dw, db may each be NULL (not computed). r: the forward's residual (NULL if none); with act != none and a
 * residual, dr (x's shape) receives dv, which is also the residual's gradient (r and dr both given or both NULL);
 * with act == none the residual does not enter the backward (its gradient is dy) and r, dr are ignored. */
GN_EXPORT int gn_backward(int dtype, int layout, int64_t N, int64_t C, int64_t S, int64_t G,
                const void *dy, const void *x, const void *r, void *dr, const double *mean, const double *rstd,
                const void *w, const void *b, int act,
                void *dx, void *dw, void *db, int nthreads);

#ifdef __cplusplus
}
#endif
#endif
