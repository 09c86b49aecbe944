/* Vector kernels of tile pooling (stride equal to the window, no padding) for src/_pool2d.pyx,
 * compiled for each element type (suffix _f float, _d double) and instruction set (see _simd.h);
 * cnx_select() picks one set at import time. Callers use the cnx_pool_tile_row_<f|d> and
 * cnx_pool_tile_grad_row_<f|d> macros.
 */
#ifndef CNX_POOL_SIMD_H
#define CNX_POOL_SIMD_H

#include "_simd.h"

#define CNX_POOL_TABLE(T)                                                                 \
    struct {                                                                              \
        void (*tile_row)(const T*, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, \
                         int, T*);                                                        \
        void (*tile_grad_row)(const T*, const T*, ptrdiff_t, ptrdiff_t, ptrdiff_t,        \
                              ptrdiff_t, ptrdiff_t, int, T*);                             \
    }
typedef CNX_POOL_TABLE(float) cnx_pool_table_f;
typedef CNX_POOL_TABLE(double) cnx_pool_table_d;

/* How a tile's vectors are placed when it has fewer channels than lanes (see the kernels). */
enum { CNX_WIDE, CNX_KEEP, CNX_PART };

#define CNX_KERNELS "_pool_simd_kernels.h"
#include "_simd_isas.h"
#undef CNX_KERNELS

/* The selected kernels and the name of their instruction set. */
static cnx_pool_table_f cnx_pool_f;
static cnx_pool_table_d cnx_pool_d;
static const char* cnx_isa_name = "";

/* Select the kernels for `name` (see cnx_isa_index). Returns 0, changing nothing, when the CPU or
 * the build lacks that set. */
static int cnx_select(const char* name)
{
    const int i = cnx_isa_index(name);
    if (i < 0)
        return 0;
    switch (i) {
#ifdef CNX_X86_DISPATCH
    case 0: cnx_pool_f = cnx_pool_table_f_avx512; cnx_pool_d = cnx_pool_table_d_avx512; break;
    case 1: cnx_pool_f = cnx_pool_table_f_avx2; cnx_pool_d = cnx_pool_table_d_avx2; break;
#endif
    default: cnx_pool_f = cnx_pool_table_f_baseline; cnx_pool_d = cnx_pool_table_d_baseline;
    }
    cnx_isa_name = cnx_isa_names[i];
    return 1;
}

#define cnx_pool_tile_row_f(...) (cnx_pool_f.tile_row(__VA_ARGS__))
#define cnx_pool_tile_row_d(...) (cnx_pool_d.tile_row(__VA_ARGS__))
#define cnx_pool_tile_grad_row_f(...) (cnx_pool_f.tile_grad_row(__VA_ARGS__))
#define cnx_pool_tile_grad_row_d(...) (cnx_pool_d.tile_grad_row(__VA_ARGS__))

#endif /* CNX_POOL_SIMD_H */
