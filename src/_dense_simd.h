/* Vector micro-kernel of the matrix products in src/_dense.pyx, with run-time selection of the
 * instruction set (see _simd.h).
 *
 * The kernel (_dense_simd_kernels.h) is compiled for each element type (suffix _f float, _d
 * double) and instruction set. cnx_select() picks one set at import time. Callers use the
 * cnx_gemm_<f|d> and cnx_transpose_<f|d> macros and the lanes / rows fields of cnx_dense_f and
 * cnx_dense_d.
 */
#ifndef CNX_DENSE_SIMD_H
#define CNX_DENSE_SIMD_H

#include "_simd.h"

#define CNX_GEMM_TABLE(T)                                                                     \
    struct {                                                                                  \
        void (*gemm)(const T*, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, const T*, ptrdiff_t, \
                     const T*, T*, ptrdiff_t, ptrdiff_t, ptrdiff_t);                          \
        void (*transpose)(const T*, ptrdiff_t, ptrdiff_t, T*, ptrdiff_t);                     \
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

#define cnx_gemm_f(...) (cnx_dense_f.gemm(__VA_ARGS__))
#define cnx_gemm_d(...) (cnx_dense_d.gemm(__VA_ARGS__))
#define cnx_transpose_f(...) (cnx_dense_f.transpose(__VA_ARGS__))
#define cnx_transpose_d(...) (cnx_dense_d.transpose(__VA_ARGS__))

#endif /* CNX_DENSE_SIMD_H */
