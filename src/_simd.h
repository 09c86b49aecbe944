/* Run-time choice of instruction set for the vector kernels (shared by _conv_simd.h and
 * _pool_simd.h).
 *
 * A kernel body (a header without include guard, named by CNX_KERNELS) is written once with GCC
 * vector extensions; _simd_isas.h compiles it for each instruction set and _simd_types.h for
 * each element type. Names get the suffixes _<f|d>_<isa> through CNX_NAME. Sets: "baseline"
 * (the build's own target flags: 16-byte vectors, SSE2 on x86-64) and, with GCC on x86-64,
 * "avx2" (AVX2 + FMA, 32-byte vectors) and "avx512" (AVX-512F, 64-byte vectors), compiled through
 * `#pragma GCC target` so that the default build stays portable.
 */
#ifndef CNX_SIMD_H
#define CNX_SIMD_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define CNX_CAT2_(a, b) a##_##b
#define CNX_CAT2(a, b) CNX_CAT2_(a, b)
#define CNX_NAME(name) CNX_CAT2(CNX_CAT2(name, CNX_S), CNX_ISA)

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define CNX_X86_DISPATCH 1
#endif

/* Instruction sets, widest first; cnx_isa_index() returns an index into this list. */
static const char* const cnx_isa_names[3] = {"avx512", "avx2", "baseline"};

/* The set to use for `name` ("auto": the widest the CPU runs, or "avx512", "avx2", "baseline"):
 * its index in cnx_isa_names, or -1 when the CPU or the build lacks it (the OS-enabled features
 * that __builtin_cpu_supports sees). */
static int cnx_isa_index(const char* name)
{
    const int automatic = strcmp(name, "auto") == 0;
    int available[3] = {0, 0, 1};
#ifdef CNX_X86_DISPATCH
    __builtin_cpu_init();
    available[1] = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    available[0] = available[1] && __builtin_cpu_supports("avx512f");
#endif
    for (int i = 0; i < 3; i++)
        if (available[i] && (automatic || strcmp(name, cnx_isa_names[i]) == 0))
            return i;
    return -1;
}

/* The selected tables SEL_f / SEL_d of the tables TABLE_<f|d>_<isa>, the name of their set
 * (cnx_isa_name) and cnx_select(name): selects the set for `name` (see cnx_isa_index), or
 * returns 0 and changes nothing when the CPU or the build lacks it. */
#ifdef CNX_X86_DISPATCH
#define CNX_WIDE_CASES(TABLE, SEL)                                         \
    case 0: SEL##_f = TABLE##_f_avx512; SEL##_d = TABLE##_d_avx512; break; \
    case 1: SEL##_f = TABLE##_f_avx2; SEL##_d = TABLE##_d_avx2; break;
#else
#define CNX_WIDE_CASES(TABLE, SEL)
#endif
#define CNX_SELECTOR(TABLE, SEL)                                                            \
    static TABLE##_f SEL##_f;                                                               \
    static TABLE##_d SEL##_d;                                                               \
    static const char* cnx_isa_name = "";                                                   \
    static int cnx_select(const char* name)                                                 \
    {                                                                                       \
        const int i = cnx_isa_index(name);                                                  \
        if (i < 0)                                                                          \
            return 0;                                                                       \
        switch (i) {                                                                        \
        CNX_WIDE_CASES(TABLE, SEL)                                                          \
        default: SEL##_f = TABLE##_f_baseline; SEL##_d = TABLE##_d_baseline;                \
        }                                                                                   \
        cnx_isa_name = cnx_isa_names[i];                                                    \
        return 1;                                                                           \
    }

#endif /* CNX_SIMD_H */
