/* Type-generic body of the matrix-product micro-kernel and the transpose of src/_dense.pyx;
 * included by _dense_simd.h once per element type and instruction set (see _simd.h), after
 * _simd_vec.h (CNX_V, CNX_M, CNX_L, loads and stores), with CNX_RB defined. No include guard.
 * Ends with the table cnx_gemm_table_<S>_<ISA>.
 *
 * A register tile is CNX_RB rows (12 with AVX-512's 32 vector registers, 6 with 16) times two
 * vectors of columns: 2 * CNX_RB accumulators, updated by outer products (a broadcast element of
 * `a` times a vector of `b`).
 */

/* Store lanes [lo, hi) of `v` at p + lo. */
static inline void CNX_NAME(cnx_store_lanes)(CNX_T* p, CNX_V v, ptrdiff_t lo, ptrdiff_t hi)
{
    if (lo == 0) {
        CNX_NAME(cnx_store)(p, v, hi);
    } else {
        CNX_T lanes[CNX_VBYTES / sizeof(CNX_T)];
        memcpy(lanes, &v, sizeof v);
        memcpy(p + lo, lanes + lo, (size_t)(hi - lo) * sizeof(CNX_T));
    }
}

/* One tile of cnx_gemm: rows [0, m) of mr (a constant once inlined, m <= mr <= CNX_RB) and
 * nv (1 or 2, a constant) vectors of columns from j0, at most to j1. A vector that would pass
 * column ldb is moved back to end there (it then recomputes columns of the vector before it,
 * which it does not store). */
static inline __attribute__((always_inline)) void CNX_NAME(cnx_gemm_tile)(
    const int mr, const int nv, const CNX_T* a, ptrdiff_t ars, ptrdiff_t acs, ptrdiff_t m,
    ptrdiff_t K, const CNX_T* b, ptrdiff_t ldb, const CNX_T* bias, CNX_T* c, ptrdiff_t ldc,
    ptrdiff_t j0, ptrdiff_t j1)
{
    ptrdiff_t col[2];
    for (int v = 0; v < nv; v++)
        col[v] = j0 + v * CNX_L < ldb - CNX_L ? j0 + v * CNX_L : ldb - CNX_L;
    const CNX_T* ar[CNX_RB]; /* rows past m repeat row 0 (computed, not stored) */
    for (int i = 0; i < mr; i++)
        ar[i] = a + (i < m ? i : 0) * ars;
    CNX_V acc[CNX_RB][2];
    for (int v = 0; v < nv; v++) {
        const CNX_V init = bias ? CNX_NAME(cnx_load)(bias + col[v]) : (CNX_V){0};
        for (int i = 0; i < mr; i++)
            acc[i][v] = init;
    }
    for (ptrdiff_t p = 0; p < K; p++) {
        CNX_V bv[2];
        for (int v = 0; v < nv; v++)
            bv[v] = CNX_NAME(cnx_load)(b + p * ldb + col[v]);
        for (int i = 0; i < mr; i++) {
            const CNX_T s = ar[i][p * acs];
            for (int v = 0; v < nv; v++)
                acc[i][v] += s * bv[v];
        }
    }
    for (int i = 0; i < mr; i++) { /* constant bounds keep acc in registers */
        if (i >= m)
            continue;
        for (int v = 0; v < nv; v++) {
            const ptrdiff_t first = j0 + v * CNX_L, end = first + CNX_L < j1 ? first + CNX_L : j1;
            CNX_NAME(cnx_store_lanes)(c + i * ldc + col[v], acc[i][v], first - col[v],
                                      end - col[v]);
        }
    }
}

/* `case MR:` of a switch over a block's row count: its tiles with mr = m = MR. */
#define CNX_GEMM_CASE(MR, TILES) \
    case MR: {                   \
        const int mr_ = MR;      \
        TILES;                   \
        break;                   \
    }
#if CNX_RB == 12
#define CNX_GEMM_CASES(TILES)                                                          \
    CNX_GEMM_CASE(12, TILES) CNX_GEMM_CASE(11, TILES) CNX_GEMM_CASE(10, TILES)         \
    CNX_GEMM_CASE(9, TILES) CNX_GEMM_CASE(8, TILES)
#else
#define CNX_GEMM_CASES(TILES) \
    CNX_GEMM_CASE(6, TILES) CNX_GEMM_CASE(5, TILES) CNX_GEMM_CASE(4, TILES)
#endif

/* Columns [n0, n1) of c (m, ldc) = bias + a b: a (m, K) is read at a[i * ars + p * acs], b
 * (K, ldb) is row-major, bias (ldb,) or NULL (zeros). Every load reads CNX_L whole columns of b
 * and bias: n1 <= ldb and ldb >= CNX_L. Rows go in balanced blocks of at most CNX_RB (at least
 * two thirds of it when m allows), each block over all column tiles. */
static void CNX_NAME(cnx_gemm)(const CNX_T* a, ptrdiff_t ars, ptrdiff_t acs, ptrdiff_t m,
                               ptrdiff_t K, const CNX_T* b, ptrdiff_t ldb, const CNX_T* bias,
                               CNX_T* c, ptrdiff_t ldc, ptrdiff_t n0, ptrdiff_t n1)
{
#define CNX_GEMM_TILES                                                                        \
    for (ptrdiff_t j0 = n0; j0 < n1; j0 += 2 * CNX_L) {                                       \
        if (j0 + CNX_L < n1)                                                                  \
            CNX_NAME(cnx_gemm_tile)(mr_, 2, ai, ars, acs, mb, K, b, ldb, bias, ci, ldc, j0, n1); \
        else                                                                                  \
            CNX_NAME(cnx_gemm_tile)(mr_, 1, ai, ars, acs, mb, K, b, ldb, bias, ci, ldc, j0, n1); \
    }
    const ptrdiff_t blocks = (m + CNX_RB - 1) / CNX_RB;
    const ptrdiff_t size = blocks > 0 ? (m + blocks - 1) / blocks : 0;
    for (ptrdiff_t i0 = 0; i0 < m; i0 += size) {
        const ptrdiff_t mb = m - i0 < size ? m - i0 : size;
        const CNX_T* ai = a + i0 * ars;
        CNX_T* ci = c + i0 * ldc;
        switch (mb) {
        CNX_GEMM_CASES(CNX_GEMM_TILES)
        default: {
            const int mr_ = CNX_RB;
            CNX_GEMM_TILES;
        }
        }
    }
#undef CNX_GEMM_TILES
}

#undef CNX_GEMM_CASE
#undef CNX_GEMM_CASES

/* Rounds of the in-register transpose: log2(CNX_L). */
#define CNX_ROUNDS (CNX_L == 16 ? 4 : CNX_L == 8 ? 3 : CNX_L == 4 ? 2 : 1)

/* Transpose the CNX_L x CNX_L block held in rows r[0..CNX_L) in place. Round k, for h =
 * CNX_L >> (k + 1): rows i and i + h (bit h of i clear) swap their off-diagonal h x h blocks,
 * which swaps bit h of every element's row and column index; (keep_a[k], keep_b[k]) pick the new
 * rows from the lanes of (r[i], r[i + h]). */
static inline __attribute__((always_inline)) void CNX_NAME(cnx_transpose_block)(
    CNX_V* r, const CNX_M* keep_a, const CNX_M* keep_b)
{
#pragma GCC unroll 4
    for (int k = 0; k < CNX_ROUNDS; k++) {
        const int h = (int)(CNX_L >> (k + 1));
#pragma GCC unroll 16
        for (int i = 0; i < CNX_L; i++) {
            if (i & h)
                continue;
            const CNX_V a = r[i], b = r[i + h];
            r[i] = __builtin_shuffle(a, b, keep_a[k]);
            r[i + h] = __builtin_shuffle(a, b, keep_b[k]);
        }
    }
}

/* wt (U, ldt) = w (D, U).T in its first D columns: whole CNX_L x CNX_L blocks in registers, the
 * ragged right and bottom edges element by element. */
static void CNX_NAME(cnx_transpose)(const CNX_T* w, ptrdiff_t D, ptrdiff_t U, CNX_T* wt,
                                    ptrdiff_t ldt)
{
    CNX_M keep_a[CNX_ROUNDS], keep_b[CNX_ROUNDS];
    for (int k = 0; k < CNX_ROUNDS; k++) {
        const int h = (int)(CNX_L >> (k + 1));
        for (int j = 0; j < CNX_L; j++) {
            keep_a[k][j] = j & h ? CNX_L + j - h : j;
            keep_b[k][j] = j & h ? CNX_L + j : j + h;
        }
    }
    const ptrdiff_t Db = D - D % CNX_L, Ub = U - U % CNX_L;
    for (ptrdiff_t d0 = 0; d0 < Db; d0 += CNX_L) {
        for (ptrdiff_t u0 = 0; u0 < Ub; u0 += CNX_L) {
            CNX_V r[CNX_L];
#pragma GCC unroll 16
            for (int i = 0; i < CNX_L; i++)
                r[i] = CNX_NAME(cnx_load)(w + (d0 + i) * U + u0);
            CNX_NAME(cnx_transpose_block)(r, keep_a, keep_b);
#pragma GCC unroll 16
            for (int i = 0; i < CNX_L; i++)
                CNX_NAME(cnx_store)(wt + (u0 + i) * ldt + d0, r[i], CNX_L);
        }
        for (ptrdiff_t u = Ub; u < U; u++)
            for (ptrdiff_t d = d0; d < d0 + CNX_L; d++)
                wt[u * ldt + d] = w[d * U + u];
    }
    for (ptrdiff_t u = 0; u < U; u++)
        for (ptrdiff_t d = Db; d < D; d++)
            wt[u * ldt + d] = w[d * U + u];
}
#undef CNX_ROUNDS

static const CNX_CAT2(cnx_gemm_table, CNX_S) CNX_NAME(cnx_gemm_table) = {
    CNX_NAME(cnx_gemm), CNX_NAME(cnx_transpose), (int)(CNX_VBYTES / sizeof(CNX_T)), CNX_RB,
};
