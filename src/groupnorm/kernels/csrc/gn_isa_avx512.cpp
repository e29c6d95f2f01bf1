/* The kernels of gn_impl.h compiled for one instruction-set level (avx512); setup.py gives this file its flags. */
#define GN_NS gn_avx512
#include "gn_impl.h"
