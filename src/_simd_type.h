/* Compile the kernel body CNX_KERNELS for the element type CNX_T (comparison-mask lanes CNX_I,
 * name suffix CNX_S) with the current instruction-set settings, then undefine those three;
 * included by _simd_types.h (no include guard). */
#include "_simd_vec.h"
#include CNX_KERNELS
#undef CNX_T
#undef CNX_I
#undef CNX_S
#undef CNX_V
#undef CNX_M
#undef CNX_L
