/* Vector kernels of tile pooling (stride equal to the window, no padding) for src/_pool2d.pyx,
 * compiled for each element type (suffix _f float, _d double) and instruction set (see _simd.h);
 * cnx_select() picks one set at import time. Callers use the cnx_pool_tile_rows_<f|d> and
 * cnx_pool_tile_grad_rows_<f|d> macros.
 */
#ifndef CNX_POOL_SIMD_H
#define CNX_POOL_SIMD_H

#include "_simd.h"

#define CNX_POOL_TABLE(T)                                                                   \
    struct {                                                                                \
        void (*tile_rows)(const T*, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,  \
                          ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, int, int, T*);        \
        void (*tile_grad_rows)(const T*, const T*, ptrdiff_t, ptrdiff_t, ptrdiff_t,         \
                               ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,       \
                               ptrdiff_t, int, int, T*);                                    \
    }
typedef CNX_POOL_TABLE(float) cnx_pool_table_f;
typedef CNX_POOL_TABLE(double) cnx_pool_table_d;

/* How a tile's vectors are placed when it has fewer channels than lanes (see the kernels). */
enum { CNX_WIDE, CNX_KEEP, CNX_PART };

#define CNX_KERNELS "_pool_simd_kernels.h"
#include "_simd_isas.h"
#undef CNX_KERNELS

/* cnx_select() and the selected kernels: cnx_pool_f, cnx_pool_d. */
CNX_SELECTOR(cnx_pool_table, cnx_pool)

#define cnx_pool_tile_rows_f(...) (cnx_pool_f.tile_rows(__VA_ARGS__))
#define cnx_pool_tile_rows_d(...) (cnx_pool_d.tile_rows(__VA_ARGS__))
#define cnx_pool_tile_grad_rows_f(...) (cnx_pool_f.tile_grad_rows(__VA_ARGS__))
#define cnx_pool_tile_grad_rows_d(...) (cnx_pool_d.tile_grad_rows(__VA_ARGS__))

#endif /* CNX_POOL_SIMD_H */
