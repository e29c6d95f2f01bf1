/* The kernels of gn_level.h compiled for one instruction-set level (avx512); setup.py gives this file its flags. */
#define GN_NS gn_avx512
#define GN_SKIP_F64 1 /* float64 runs the baseline code: it is not a speed target, and this shortens the build */
#include "gn_level.h"
