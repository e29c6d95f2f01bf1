/* The kernels of gn_impl.h compiled for one instruction-set level (avx2); setup.py gives this file its flags. */
#define GN_NS gn_avx2
#include "gn_impl.h"
