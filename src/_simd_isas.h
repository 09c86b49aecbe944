/* Compile the kernel body CNX_KERNELS for every instruction set of _simd.h, each for float and
 * double (_simd_types.h). CNX_RB and CNX_QB are the convolution kernels' block sizes for the set.
 * Include once, after defining CNX_KERNELS. */
#define CNX_ISA baseline
#define CNX_VBYTES 16
#define CNX_RB 6
#define CNX_QB 6
#include "_simd_types.h"
#undef CNX_ISA
#undef CNX_VBYTES
#undef CNX_RB
#undef CNX_QB

#ifdef CNX_X86_DISPATCH
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define CNX_ISA avx2
#define CNX_VBYTES 32
#define CNX_RB 6 /* of 16 vector registers */
#define CNX_QB 6
#include "_simd_types.h"
#undef CNX_ISA
#undef CNX_VBYTES
#undef CNX_RB
#undef CNX_QB
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma")
#define CNX_ISA avx512
#define CNX_VBYTES 64
#define CNX_RB 12 /* of 32 vector registers */
#define CNX_QB 6  /* loads, not registers, bound the pixel-lane kernels */
#include "_simd_types.h"
#undef CNX_ISA
#undef CNX_VBYTES
#undef CNX_RB
#undef CNX_QB
#pragma GCC pop_options
#endif
