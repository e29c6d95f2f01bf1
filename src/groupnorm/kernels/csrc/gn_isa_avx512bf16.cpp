/* The kernels of gn_level.h for bfloat16 data on CPUs with AVX512_BF16 (the float -> bfloat16 conversion is one
 * instruction instead of an integer rounding sequence); setup.py gives this file its flags. Only the bfloat16
 * entry points are compiled here: gn_dispatch.cpp sends the other dtypes to the AVX-512 level. */
#define GN_NS gn_avx512bf16
#define GN_SKIP_F64 1
#define GN_ONLY_BF16 1
#include "gn_level.h"
