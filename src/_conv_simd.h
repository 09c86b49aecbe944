/* Vector micro-kernels of the direct convolution in src/_conv2d.pyx.
 *
 * Written with GCC/Clang vector extensions: the vector width follows the compiler's target flags
 * (16 bytes for the portable SSE2 baseline, 32 with AVX, 64 with AVX-512F), so a build variant
 * with other target flags gets wider kernels from the same source. The type-generic bodies live in
 * _conv_simd_kernels.h, instantiated here for float (suffix _f) and double (suffix _d).
 */
#ifndef CNX_CONV_SIMD_H
#define CNX_CONV_SIMD_H

#include <stddef.h>
#include <string.h>

#if defined(__AVX512F__)
#define CNX_VBYTES 64
#define CNX_RB 12 /* register block: 12 accumulators of 32 vector registers */
#define CNX_QB 6  /* pixel-lane block: 6 vectors (loads bound it, not registers) */
#elif defined(__AVX__)
#define CNX_VBYTES 32
#define CNX_RB 6 /* 6 accumulators of 16 vector registers */
#define CNX_QB 6
#else
#define CNX_VBYTES 16
#define CNX_RB 6
#define CNX_QB 6
#endif

#define CNX_LANES_F (CNX_VBYTES / 4) /* float lanes per vector */
#define CNX_LANES_D (CNX_VBYTES / 8) /* double lanes per vector */

#define CNX_CAT_(a, b) a##_##b
#define CNX_CAT(a, b) CNX_CAT_(a, b)
#define CNX_NAME(name) CNX_CAT(name, CNX_S)

#define CNX_T float
#define CNX_S f
#include "_conv_simd_kernels.h"
#undef CNX_T
#undef CNX_S

#define CNX_T double
#define CNX_S d
#include "_conv_simd_kernels.h"
#undef CNX_T
#undef CNX_S

#endif /* CNX_CONV_SIMD_H */
