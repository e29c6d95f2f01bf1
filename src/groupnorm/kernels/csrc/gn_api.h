/* groupnorm compiled CPU kernels: the C API (no PyTorch headers).
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
 * All functions return GN_OK or an error code (nothing is written, and nothing out of bounds, on GN_EINVAL).
 *
 * Callers: the package's Python module (gn_python.cpp) and any C / C++ code linked against the library. A
 * caller compiled against this header checks gn_abi_version() == GN_ABI_VERSION once before its first call.
 */
#ifndef GROUPNORM_GN_API_H
#define GROUPNORM_GN_API_H
#include <stdint.h>

/* The one definition of the ABI version: bumped whenever a struct, an enum or a signature below changes.
 * 3: the arguments as the structs gn_fwd_args / gn_bwd_args (2: 16 / 19 scalar arguments). */
#define GN_ABI_VERSION 3

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

/* The shape and options shared by the forward and the backward: x is (N, C, S) in `layout`, G groups. */
typedef struct gn_shape {
    int dtype;    /* GN_F32 .. GN_F16 */
    int layout;   /* GN_LAYOUT_NCS or GN_LAYOUT_NSC */
    int act;      /* GN_ACT_NONE .. GN_ACT_GELU */
    int nthreads; /* >= 1: an upper bound (small inputs run on fewer threads; results do not depend on it) */
    int64_t N, C, S, G;
} gn_shape;

/* Forward: y = act(GN(x) [+ r]). mean and rstd may both be NULL (statistics not returned: inference); r may be
 * NULL (no residual); w, b may be NULL (weight 1, bias 0). */
typedef struct gn_fwd_args {
    gn_shape sh;
    double eps; /* finite, >= 0 */
    const void *x, *w, *b, *r;
    void *y;
    double *mean, *rstd;
} gn_fwd_args;

/* Backward from dy, x and the forward's mean / rstd. dx, dw, db may each be NULL (not computed). r: the
 * forward's residual (NULL if none); with act != none and a residual, dr (x's shape) receives dv, which is also
 * the residual's gradient (r and dr both given or both NULL); with act == none the residual does not enter the
 * backward (its gradient is dy) and r, dr are ignored. */
typedef struct gn_bwd_args {
    gn_shape sh;
    const void *dy, *x, *r, *w, *b;
    const double *mean, *rstd;
    void *dr, *dx, *dw, *db;
} gn_bwd_args;

GN_EXPORT int gn_abi_version(void); /* GN_ABI_VERSION of the library's build */
/* Choose the code path: GN_ISA_AUTO picks the best the CPU supports; a level the CPU lacks gives GN_EINVAL.
 * Returns the level now in use (>= 0) or a negative error. */
GN_EXPORT int gn_set_isa(int level);
GN_EXPORT int gn_get_isa(void);
/* Highest level compiled into this library (depends on the build machine's architecture). */
GN_EXPORT int gn_max_compiled_isa(void);

/* The cache sizes the kernels' blocking is chosen from (gn_runtime.h), in bytes: out[0] L1 data, out[1] L2,
 * out[2] the last-level cache as this CPU's cores see it (per core share times the cores that share it, as the
 * OS reports it). Detected once from /sys/devices/system/cpu/cpu0/cache (Linux), else sysconf, else 32 KiB /
 * 1 MiB / 8 MiB. Results depend on them only through the rounding of partial sums (never on the thread count).
 * gn_set_cache_sizes overrides them (a value <= 0: the detected one), e.g. to test the blocking paths with
 * small inputs; returns GN_OK. */
GN_EXPORT void gn_get_cache_sizes(int64_t out[3]);
GN_EXPORT int gn_set_cache_sizes(int64_t l1, int64_t l2, int64_t l3);

GN_EXPORT int gn_forward(const gn_fwd_args *args);
GN_EXPORT int gn_backward(const gn_bwd_args *args);

#ifdef __cplusplus
}
#endif
#endif
