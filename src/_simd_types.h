/* Compile the kernel body CNX_KERNELS for float (suffix f) and double (suffix d) with the
 * current instruction-set settings; included by _simd_isas.h (no include guard). */
#define CNX_T float
#define CNX_I int32_t
#define CNX_S f
#include "_simd_type.h"

#define CNX_T double
#define CNX_I int64_t
#define CNX_S d
#include "_simd_type.h"
