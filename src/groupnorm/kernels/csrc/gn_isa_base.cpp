/* The kernels of gn_level.h compiled for one instruction-set level (base); setup.py gives this file its flags. */
#define GN_NS gn_base
#include "gn_level.h"
