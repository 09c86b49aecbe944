/* Vector micro-kernel of the matrix products in src/_dense.pyx, with run-time selection of the
 * instruction set (see _simd.h).
 *
 * The kernel (_dense_simd_kernels.h) is compiled for each element type (suffix _f float, _d
 * double) and instruction set. cnx_select() picks one set at import time. Callers use the
 * cnx_gemm_<f|d> macros and the lanes / rows fields of cnx_dense_f and cnx_dense_d.
 */
#ifndef CNX_DENSE_SIMD_H
#define CNX_DENSE_SIMD_H

#include "_simd.h"

#define CNX_GEMM_TABLE(T)                                                                     \
    struct {                                                                                  \
        void (*gemm)(const T*, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, const T*, ptrdiff_t, \
                     const T*, T*, ptrdiff_t, ptrdiff_t, ptrdiff_t);                          \
        int lanes; /* elements per vector */                                                  \
        int rows;  /* rows of a register tile at most */                                      \
    }
typedef CNX_GEMM_TABLE(float) cnx_gemm_table_f;
typedef CNX_GEMM_TABLE(double) cnx_gemm_table_d;

#define CNX_KERNELS "_dense_simd_kernels.h"
#include "_simd_isas.h"
#undef CNX_KERNELS

/* cnx_select() and the selected kernels: cnx_dense_f, cnx_dense_d. */
CNX_SELECTOR(cnx_gemm_table, cnx_dense)

/* wt (U, ldt) = w (D, U).T in its first D columns, in 16 x 16 blocks; T is float or double. */
#define CNX_TRANSPOSE(NAME, T)                                                              \
    static void NAME(const T* w, ptrdiff_t D, ptrdiff_t U, T* wt, ptrdiff_t ldt)            \
    {                                                                                       \
        for (ptrdiff_t d0 = 0; d0 < D; d0 += 16) {                                          \
            const ptrdiff_t d1 = d0 + 16 < D ? d0 + 16 : D;                                 \
            for (ptrdiff_t u0 = 0; u0 < U; u0 += 16) {                                      \
                const ptrdiff_t u1 = u0 + 16 < U ? u0 + 16 : U;                             \
                for (ptrdiff_t u = u0; u < u1; u++)                                         \
                    for (ptrdiff_t d = d0; d < d1; d++)                                     \
                        wt[u * ldt + d] = w[d * U + u];                                     \
            }                                                                               \
        }                                                                                   \
    }
CNX_TRANSPOSE(cnx_transpose_f, float)
CNX_TRANSPOSE(cnx_transpose_d, double)
#undef CNX_TRANSPOSE

#define cnx_gemm_f(...) (cnx_dense_f.gemm(__VA_ARGS__))
#define cnx_gemm_d(...) (cnx_dense_d.gemm(__VA_ARGS__))

#endif /* CNX_DENSE_SIMD_H */
