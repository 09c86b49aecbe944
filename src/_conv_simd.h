/* Vector micro-kernels of the direct convolution in src/_conv2d.pyx, with run-time selection of
 * the instruction set (see _simd.h).
 *
 * The kernels (_conv_simd_kernels.h) are compiled for each element type (suffix _f float, _d
 * double) and instruction set. cnx_select() picks one set at import time. Callers use the
 * cnx_<kernel>_<f|d> macros and the lanes / rb / qb fields of cnx_f and cnx_d.
 */
#ifndef CNX_CONV_SIMD_H
#define CNX_CONV_SIMD_H

#include "_simd.h"

/* The kernels of one element type and one instruction set, and their blocking parameters. */
#define CNX_TABLE(T)                                                                            \
    struct {                                                                                    \
        void (*direct_rows)(const T*, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,    \
                            const ptrdiff_t*, ptrdiff_t, const T*, ptrdiff_t, const T*, T*,     \
                            ptrdiff_t, ptrdiff_t, ptrdiff_t);                                   \
        void (*weight_grad)(const T*, ptrdiff_t, ptrdiff_t, const ptrdiff_t*, ptrdiff_t,        \
                            const T*, ptrdiff_t, ptrdiff_t, ptrdiff_t, T*);                     \
        void (*span_weight_grad)(const T*, ptrdiff_t, ptrdiff_t, ptrdiff_t, const T*,          \
                                 ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, T*,      \
                                 ptrdiff_t);                                                    \
        void (*channel_sums)(const T*, ptrdiff_t, ptrdiff_t, T*);                               \
        void (*input_grad_rows)(const T* const*, ptrdiff_t, const ptrdiff_t*, T* const*,       \
                                ptrdiff_t, ptrdiff_t, ptrdiff_t, const T*, ptrdiff_t,           \
                                ptrdiff_t, ptrdiff_t);                                          \
        void (*input_grad_slide)(const T*, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, const T*, \
                                 ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, T*, ptrdiff_t);     \
        void (*planar_conv)(const T*, ptrdiff_t, ptrdiff_t, const ptrdiff_t*, ptrdiff_t,        \
                            const T*, ptrdiff_t, ptrdiff_t, ptrdiff_t, T*, ptrdiff_t,           \
                            ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t);             \
        void (*planar_weight_grad)(const T*, ptrdiff_t, ptrdiff_t, const ptrdiff_t*, ptrdiff_t, \
                                   const T*, ptrdiff_t, ptrdiff_t, T*, T*);                     \
        /* expanded rows (few channels): NULL below AVX-512 */                                  \
        void (*expanded_conv)(const T*, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, \
                              const T*, const T*, T*, ptrdiff_t, ptrdiff_t);                    \
        void (*expanded_weight_grad)(const T*, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,     \
                                     ptrdiff_t, const T*, ptrdiff_t, ptrdiff_t, T*, T*);        \
        int lanes;  /* elements per vector */                                                   \
        int vbytes; /* bytes per vector */                                                      \
        int rb;     /* register block: accumulator vectors of the channel-lane kernels */       \
        int qb;     /* vectors per block of the pixel-lane kernels */                           \
        int (*block_items)(int, ptrdiff_t); /* register-block size for nf vectors, n items */ \
        int slide_kh; /* the tallest kernel of input_grad_slide */                           \
    }
typedef CNX_TABLE(float) cnx_table_f;
typedef CNX_TABLE(double) cnx_table_d;

#define CNX_KERNELS "_conv_simd_kernels.h"
#include "_simd_isas.h"
#undef CNX_KERNELS

/* cnx_select() and the selected kernels: cnx_f, cnx_d. */
CNX_SELECTOR(cnx_table, cnx)

#define cnx_direct_rows_f(...) (cnx_f.direct_rows(__VA_ARGS__))
#define cnx_direct_rows_d(...) (cnx_d.direct_rows(__VA_ARGS__))
#define cnx_weight_grad_f(...) (cnx_f.weight_grad(__VA_ARGS__))
#define cnx_weight_grad_d(...) (cnx_d.weight_grad(__VA_ARGS__))
#define cnx_span_weight_grad_f(...) (cnx_f.span_weight_grad(__VA_ARGS__))
#define cnx_span_weight_grad_d(...) (cnx_d.span_weight_grad(__VA_ARGS__))
#define cnx_channel_sums_f(...) (cnx_f.channel_sums(__VA_ARGS__))
#define cnx_channel_sums_d(...) (cnx_d.channel_sums(__VA_ARGS__))
#define cnx_input_grad_rows_f(...) (cnx_f.input_grad_rows(__VA_ARGS__))
#define cnx_input_grad_rows_d(...) (cnx_d.input_grad_rows(__VA_ARGS__))
#define cnx_input_grad_slide_f(...) (cnx_f.input_grad_slide(__VA_ARGS__))
#define cnx_input_grad_slide_d(...) (cnx_d.input_grad_slide(__VA_ARGS__))
#define cnx_planar_conv_f(...) (cnx_f.planar_conv(__VA_ARGS__))
#define cnx_planar_conv_d(...) (cnx_d.planar_conv(__VA_ARGS__))
#define cnx_planar_weight_grad_f(...) (cnx_f.planar_weight_grad(__VA_ARGS__))
#define cnx_planar_weight_grad_d(...) (cnx_d.planar_weight_grad(__VA_ARGS__))
#define cnx_expanded_conv_f(...) (cnx_f.expanded_conv(__VA_ARGS__))
#define cnx_expanded_conv_d(...) (cnx_d.expanded_conv(__VA_ARGS__))
#define cnx_expanded_weight_grad_f(...) (cnx_f.expanded_weight_grad(__VA_ARGS__))
#define cnx_expanded_weight_grad_d(...) (cnx_d.expanded_weight_grad(__VA_ARGS__))
/* Whether the selected kernels have the expanded-row path. */
#define cnx_has_expanded() (cnx_f.expanded_conv != NULL)

#endif /* CNX_CONV_SIMD_H */
