/* Compile the kernel body CNX_KERNELS for float (suffix f) and double (suffix d) with the
 * current instruction-set settings; included by _simd_isas.h (no include guard). */
#define CNX_T float
#define CNX_I int32_t
#define CNX_S f
#include "_simd_vec.h"
#include CNX_KERNELS
#undef CNX_T
#undef CNX_I
#undef CNX_S
#undef CNX_V
#undef CNX_M
#undef CNX_L

#define CNX_T double
#define CNX_I int64_t
#define CNX_S d
#include "_simd_vec.h"
#include CNX_KERNELS
#undef CNX_T
#undef CNX_I
#undef CNX_S
#undef CNX_V
#undef CNX_M
#undef CNX_L
