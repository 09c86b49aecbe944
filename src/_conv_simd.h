/* Vector micro-kernels of the direct convolution in src/_conv2d.pyx, with run-time selection of
 * the instruction set.
 *
 * The kernels are written once (_conv_simd_kernels.h) with GCC vector extensions and compiled
 * here for each element type (suffix _f float, _d double) and instruction set: "baseline" (the
 * build's own target flags, 16-byte vectors: SSE2 on x86-64) and, with GCC on x86-64, "avx2"
 * (AVX2 + FMA, 32-byte vectors) and "avx512" (AVX-512F, 64-byte vectors), compiled through
 * `#pragma GCC target` so that the default build stays portable. cnx_select() picks one set at
 * import time from what the CPU supports (the OS-enabled features __builtin_cpu_supports sees).
 * Callers use the cnx_<kernel>_<f|d> macros and the lanes / rb / qb fields of cnx_f and cnx_d.
 */
#ifndef CNX_CONV_SIMD_H
#define CNX_CONV_SIMD_H

#include <stddef.h>
#include <string.h>

#define CNX_CAT2_(a, b) a##_##b
#define CNX_CAT2(a, b) CNX_CAT2_(a, b)
#define CNX_NAME(name) CNX_CAT2(CNX_CAT2(name, CNX_S), CNX_ISA)

/* The kernels of one element type and one instruction set, and their blocking parameters. */
#define CNX_TABLE(T)                                                                            \
    struct {                                                                                    \
        void (*direct_row)(const T*, ptrdiff_t, ptrdiff_t, ptrdiff_t, const ptrdiff_t*,         \
                           ptrdiff_t, const T*, ptrdiff_t, const T*, T*, ptrdiff_t, ptrdiff_t); \
        void (*weight_grad)(const T*, ptrdiff_t, ptrdiff_t, const ptrdiff_t*, ptrdiff_t,        \
                            const T*, ptrdiff_t, ptrdiff_t, ptrdiff_t, T*);                     \
        void (*input_grad_rows)(const T* const*, T* const*, ptrdiff_t, ptrdiff_t, ptrdiff_t,    \
                                const T*, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t);          \
        void (*planar_conv)(const T*, ptrdiff_t, ptrdiff_t, const ptrdiff_t*, ptrdiff_t,        \
                            const T*, ptrdiff_t, ptrdiff_t, ptrdiff_t, T*, ptrdiff_t,           \
                            ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t);             \
        void (*planar_weight_grad)(const T*, ptrdiff_t, ptrdiff_t, const ptrdiff_t*, ptrdiff_t, \
                                   const T*, ptrdiff_t, ptrdiff_t, T*, T*);                     \
        int lanes;  /* elements per vector */                                                   \
        int vbytes; /* bytes per vector */                                                      \
        int rb;     /* register block: accumulator vectors of the channel-lane kernels */       \
        int qb;     /* vectors per block of the pixel-lane kernels */                           \
        int (*block_items)(int, ptrdiff_t); /* register-block size for nf vectors, n items */ \
    }
typedef CNX_TABLE(float) cnx_table_f;
typedef CNX_TABLE(double) cnx_table_d;

/* Instantiate the kernels for float and double with the current CNX_ISA, CNX_VBYTES, CNX_RB
 * and CNX_QB (as cnx_table_f_<isa> and cnx_table_d_<isa>). */
#define CNX_T float
#define CNX_S f
#define CNX_ISA baseline
#define CNX_VBYTES 16
#define CNX_RB 6
#define CNX_QB 6
#include "_conv_simd_kernels.h"
#undef CNX_T
#undef CNX_S
#define CNX_T double
#define CNX_S d
#include "_conv_simd_kernels.h"
#undef CNX_T
#undef CNX_S
#undef CNX_ISA
#undef CNX_VBYTES
#undef CNX_RB
#undef CNX_QB

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define CNX_X86_DISPATCH 1

#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define CNX_ISA avx2
#define CNX_VBYTES 32
#define CNX_RB 6 /* of 16 vector registers */
#define CNX_QB 6
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
#undef CNX_ISA
#undef CNX_VBYTES
#undef CNX_RB
#undef CNX_QB
#pragma GCC pop_options
#endif

/* The selected kernels and the name of their instruction set. */
static cnx_table_f cnx_f;
static cnx_table_d cnx_d;
static const char* cnx_isa_name = "";

/* Select the kernels: name is "auto" (the widest the CPU runs), "avx512", "avx2" or
 * "baseline". Returns 0, changing nothing, when the CPU or the build lacks that set. */
static int cnx_select(const char* name)
{
    const int automatic = strcmp(name, "auto") == 0;
#ifdef CNX_X86_DISPATCH
    __builtin_cpu_init();
    const int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    const int avx512 = avx2 && __builtin_cpu_supports("avx512f");
    if (avx512 && (automatic || strcmp(name, "avx512") == 0)) {
        cnx_f = cnx_table_f_avx512;
        cnx_d = cnx_table_d_avx512;
        cnx_isa_name = "avx512";
        return 1;
    }
    if (avx2 && (automatic || strcmp(name, "avx2") == 0)) {
        cnx_f = cnx_table_f_avx2;
        cnx_d = cnx_table_d_avx2;
        cnx_isa_name = "avx2";
        return 1;
    }
#endif
    if (automatic || strcmp(name, "baseline") == 0) {
        cnx_f = cnx_table_f_baseline;
        cnx_d = cnx_table_d_baseline;
        cnx_isa_name = "baseline";
        return 1;
    }
    return 0;
}

#define cnx_direct_row_f(...) (cnx_f.direct_row(__VA_ARGS__))
#define cnx_direct_row_d(...) (cnx_d.direct_row(__VA_ARGS__))
#define cnx_weight_grad_f(...) (cnx_f.weight_grad(__VA_ARGS__))
#define cnx_weight_grad_d(...) (cnx_d.weight_grad(__VA_ARGS__))
#define cnx_input_grad_rows_f(...) (cnx_f.input_grad_rows(__VA_ARGS__))
#define cnx_input_grad_rows_d(...) (cnx_d.input_grad_rows(__VA_ARGS__))
#define cnx_planar_conv_f(...) (cnx_f.planar_conv(__VA_ARGS__))
#define cnx_planar_conv_d(...) (cnx_d.planar_conv(__VA_ARGS__))
#define cnx_planar_weight_grad_f(...) (cnx_f.planar_weight_grad(__VA_ARGS__))
#define cnx_planar_weight_grad_d(...) (cnx_d.planar_weight_grad(__VA_ARGS__))

#endif /* CNX_CONV_SIMD_H */
