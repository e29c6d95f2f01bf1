/* The kernels of one instruction-set level: the entry points forward / backward, which pick the template for
 * the call's dtype, activation and layout. Each gn_isa_*.cpp defines GN_NS (the level's namespace) and includes
 * this file, and setup.py compiles it with that level's -march flags; gn_dispatch.cpp checks the arguments and
 * calls the best level the CPU runs. The topics, one header each (each opens namespace GN_NS itself):
 *   gn_convert.h  element types, loads / stores to the compute type, the typed argument structs
 *   gn_math.h     activations, shifted sums, affine and backward coefficients
 *   gn_runtime.h  threads, work split, store policy, floating-point mode
 *   gn_v512.h     hand-written AVX-512 inner loops (levels with AVX-512 only)
 *   gn_fwd_ncs.h / gn_fwd_nsc.h / gn_bwd_ncs.h / gn_bwd_nsc.h  forward and backward per layout
 * GN_SKIP_F64: float64 is not compiled into this level (it runs the baseline's code); GN_ONLY_BF16: only
 * bfloat16 is (the AVX512_BF16 level; gn_dispatch.cpp sends the other dtypes to the AVX-512 level).
 */
#ifndef GN_LEVEL_H
#define GN_LEVEL_H
#include "gn_api.h"
#include "gn_bwd_ncs.h"
#include "gn_bwd_nsc.h"
#include "gn_convert.h"
#include "gn_fwd_ncs.h"
#include "gn_fwd_nsc.h"

namespace GN_NS {

template <typename T, int ACT> static int fwd_layout(const gn_fwd_args &a) {
    const FwdArgs<T> p(a);
    return a.sh.layout == GN_LAYOUT_NCS ? fwd_ncs<T, ACT>(p) : fwd_nsc<T, ACT>(p);
}
template <typename T, int ACT> static int bwd_layout(const gn_bwd_args &a) {
    const BwdArgs<T> p(a);
    return a.sh.layout == GN_LAYOUT_NCS ? bwd_ncs<T, ACT>(p) : bwd_nsc<T, ACT>(p);
}

template <typename T> static int fwd_dtype(const gn_fwd_args &a) {
    switch (a.sh.act) {
    case GN_ACT_NONE: return fwd_layout<T, GN_ACT_NONE>(a);
    case GN_ACT_RELU: return fwd_layout<T, GN_ACT_RELU>(a);
    case GN_ACT_SILU: return fwd_layout<T, GN_ACT_SILU>(a);
    case GN_ACT_GELU: return fwd_layout<T, GN_ACT_GELU>(a);
    }
    return GN_EINVAL;
}
template <typename T> static int bwd_dtype(const gn_bwd_args &a) {
    switch (a.sh.act) {
    case GN_ACT_NONE: return bwd_layout<T, GN_ACT_NONE>(a);
    case GN_ACT_RELU: return bwd_layout<T, GN_ACT_RELU>(a);
    case GN_ACT_SILU: return bwd_layout<T, GN_ACT_SILU>(a);
    case GN_ACT_GELU: return bwd_layout<T, GN_ACT_GELU>(a);
    }
    return GN_EINVAL;
}

/* Arguments were validated by gn_dispatch.cpp (mean / rstd never null here). */
int forward(const gn_fwd_args *a) {
    switch (a->sh.dtype) {
#ifndef GN_ONLY_BF16
    case GN_F32: return fwd_dtype<float>(*a);
    case GN_F16: return fwd_dtype<f16_t>(*a);
#ifndef GN_SKIP_F64
    case GN_F64: return fwd_dtype<double>(*a);
#endif
#endif
    case GN_BF16: return fwd_dtype<bf16_t>(*a);
    }
    return GN_EINVAL;
}
int backward(const gn_bwd_args *a) {
    switch (a->sh.dtype) {
#ifndef GN_ONLY_BF16
    case GN_F32: return bwd_dtype<float>(*a);
    case GN_F16: return bwd_dtype<f16_t>(*a);
#ifndef GN_SKIP_F64
    case GN_F64: return bwd_dtype<double>(*a);
#endif
#endif
    case GN_BF16: return bwd_dtype<bf16_t>(*a);
    }
    return GN_EINVAL;
}

}  // namespace GN_NS
#endif
