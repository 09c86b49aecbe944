/* Type-generic body of the tile-pooling kernels; included by _pool_simd.h once per element type
 * and instruction set (see _simd.h), after _simd_vec.h. No include guard. Ends with the table
 * cnx_pool_table_<S>_<ISA> of these kernels.
 *
 * Tiles: windows of kh x kw cells with the stride equal to the size and no padding, so every
 * input cell belongs to at most one window. Output row r = n * Ho + oh pools `kh` input rows of
 * `row` values each from row n * H + oh * kh on (channels-last, C channels per cell), Wo tiles
 * along them, in order; one call handles a range of output rows.
 *
 * A tile's channels go through vectors of L lanes. With C >= L: chunks at channels 0, L, 2L, ...
 * and, when L does not divide C, a last chunk at C - L that recomputes a few channels (identical
 * values). With C < L one vector per cell, placed by cnx_placement():
 *  - WIDE: lanes from channel 0, reaching past the cell into the ones after it. Loads there are
 *    harmless and stores are overwritten by the cells written after them; used while the vectors
 *    stay inside the row.
 *  - KEEP (the last tiles): the vector ends at channel C - 1 and starts in cells already written;
 *    stores keep those lanes' values in memory.
 *  - PART (rows shorter than a vector): through lane buffers.
 *
 * max: the first cell (in row-major order) holding the maximum, NaN beating any number and the
 * first NaN winning; min likewise with the minimum. Average sums down each tile column first,
 * then across the columns, and divides by kh * kw. With `relu` (max and min only) the kernels
 * compute relu(pool(x)) and its gradient, bit for bit as the separate ReLU kernels would: outputs
 * <= 0 become +0, and a tile's gradient is multiplied by 1 or 0 as its extreme is > 0 or not.
 */
/* `v` replaces the running extreme `best`: beyond it (above for max, below for min), or a NaN
 * while `best` is not. */
static inline CNX_M CNX_NAME(cnx_beats)(CNX_V v, CNX_V best, int lower)
{
    return (best == best) & ~(lower ? v >= best : v <= best);
}

/* relu(v): 0 where v <= 0 (a NaN stays). */
static inline CNX_V CNX_NAME(cnx_relu)(CNX_V v)
{
    return CNX_NAME(cnx_blend)(v <= (CNX_V){0}, (CNX_V){0}, v);
}

/* g * (extreme > 0 ? 1 : 0): the ReLU's gradient rule. */
static inline CNX_V CNX_NAME(cnx_relu_grad)(CNX_V g, CNX_V extreme)
{
    return g * CNX_NAME(cnx_blend)(extreme > (CNX_V){0}, (CNX_V){0} + 1, (CNX_V){0});
}

/* How tile `ow` (of Wo, C < L channels) places its vectors; it reaches (ow * kw + kw - 1) * C + L
 * values into the input rows and ow * C + L into the output row. */
static inline int CNX_NAME(cnx_placement)(ptrdiff_t ow, ptrdiff_t row, ptrdiff_t kw,
                                          ptrdiff_t C, ptrdiff_t Wo)
{
    if ((ow * kw + kw - 1) * C + CNX_L <= row && ow * C + CNX_L <= Wo * C)
        return CNX_WIDE;
    return ow * C + C >= CNX_L ? CNX_KEEP : CNX_PART;
}

static inline CNX_V CNX_NAME(cnx_tile_load)(const CNX_T* p, int how, ptrdiff_t C)
{
    return how == CNX_PART ? CNX_NAME(cnx_load_part)(p, C) : CNX_NAME(cnx_load)(p);
}

/* KEEP stores only the lanes set in `ours`. */
static inline void CNX_NAME(cnx_tile_store)(CNX_T* p, CNX_V v, int how, ptrdiff_t C, CNX_M ours)
{
    if (how == CNX_KEEP)
        v = CNX_NAME(cnx_blend)(ours, v, CNX_NAME(cnx_load)(p));
    CNX_NAME(cnx_store)(p, v, how == CNX_PART ? C : CNX_L);
}

/* Lanes L - C and up: a KEEP vector's own channels. */
static inline CNX_M CNX_NAME(cnx_own_lanes)(ptrdiff_t C)
{
    CNX_M ours;
    for (ptrdiff_t l = 0; l < CNX_L; l++)
        ours[l] = l >= CNX_L - C ? -1 : 0;
    return ours;
}

/* BODY for each vector chunk of tile `ow`: lane 0 at channel c of each cell, placed as `how`. */
#define CNX_TILE_CHUNKS(ow, BODY)                                                               \
    if (C >= CNX_L) {                                                                           \
        for (ptrdiff_t c0 = 0; c0 < C; c0 += CNX_L) {                                           \
            const ptrdiff_t c = c0 + CNX_L <= C ? c0 : C - CNX_L;                               \
            const int how = CNX_WIDE;                                                           \
            BODY;                                                                               \
        }                                                                                       \
    } else {                                                                                    \
        const int how = CNX_NAME(cnx_placement)(ow, row, kw, C, Wo);                            \
        const ptrdiff_t c = how == CNX_KEEP ? C - CNX_L : 0;                                    \
        BODY;                                                                                   \
    }

/* Tiles [first, Wo) of one output row of y (Wo * C values) from the kh input rows at x. */
static inline __attribute__((always_inline)) void CNX_NAME(cnx_tile_forward)(
    const int mode, const int relu, const CNX_T* x, ptrdiff_t row, ptrdiff_t kh, ptrdiff_t kw,
    ptrdiff_t C, ptrdiff_t first, ptrdiff_t Wo, CNX_T* y, CNX_M ours)
{
    const CNX_T count = (CNX_T)(kh * kw);
    for (ptrdiff_t ow = first; ow < Wo; ow++) {
        CNX_TILE_CHUNKS(ow, {
            const CNX_T* tile = x + ow * kw * C + c;
            CNX_V best = CNX_NAME(cnx_tile_load)(tile, how, C);
            if (mode == 2) {
                CNX_V col = best;
                for (ptrdiff_t j = 0; j < kw; j++) {
                    if (j > 0)
                        col = CNX_NAME(cnx_tile_load)(tile + j * C, how, C);
                    for (ptrdiff_t i = 1; i < kh; i++)
                        col += CNX_NAME(cnx_tile_load)(tile + i * row + j * C, how, C);
                    best = j == 0 ? col : best + col;
                }
                best = best / count;
            } else {
                for (ptrdiff_t i = 0; i < kh; i++)
                    for (ptrdiff_t j = i == 0; j < kw; j++) {
                        const CNX_V v = CNX_NAME(cnx_tile_load)(tile + i * row + j * C, how, C);
                        best = CNX_NAME(cnx_blend)(CNX_NAME(cnx_beats)(v, best, mode), v, best);
                    }
            }
            if (relu)
                best = CNX_NAME(cnx_relu)(best);
            CNX_NAME(cnx_tile_store)(y + ow * C + c, best, how, C, ours);
        })
    }
}

/* The gradient of tiles [first, Wo) on the kh input rows at dx (Wo * kw * C values of each) from
 * one output row of dy (Wo * C values): max/min assign each tile's gradient to its winning cell
 * and zero to the others; avg gives every cell of the tile the gradient / (kh * kw). A gradient
 * of -0.0 is stored as +0.0 (adding +0.0), as the scatter-add from zero of the other paths (and of
 * the NumPy twin) gives it. */
static inline __attribute__((always_inline)) void CNX_NAME(cnx_tile_backward)(
    const int mode, const int relu, const CNX_T* x, const CNX_T* dy, ptrdiff_t row, ptrdiff_t kh,
    ptrdiff_t kw, ptrdiff_t C, ptrdiff_t first, ptrdiff_t Wo, CNX_T* dx, CNX_M ours)
{
    const CNX_T count = (CNX_T)(kh * kw);
    for (ptrdiff_t ow = first; ow < Wo; ow++) {
        CNX_TILE_CHUNKS(ow, {
            const ptrdiff_t at = ow * kw * C + c;
            const CNX_V g = CNX_NAME(cnx_tile_load)(dy + ow * C + c, how, C);
            if (mode == 2) {
                const CNX_V share = g / count + (CNX_V){0};
                for (ptrdiff_t i = 0; i < kh; i++)
                    for (ptrdiff_t j = 0; j < kw; j++)
                        CNX_NAME(cnx_tile_store)(dx + i * row + at + j * C, share, how, C, ours);
            } else {
                CNX_V best = CNX_NAME(cnx_tile_load)(x + at, how, C);
                CNX_M winner = {0}; /* row-major index of the winning cell */
                for (ptrdiff_t i = 0; i < kh; i++)
                    for (ptrdiff_t j = i == 0; j < kw; j++) {
                        const CNX_V v = CNX_NAME(cnx_tile_load)(x + i * row + at + j * C, how, C);
                        const CNX_M wins = CNX_NAME(cnx_beats)(v, best, mode);
                        best = CNX_NAME(cnx_blend)(wins, v, best);
                        winner = (wins & (CNX_I)(i * kw + j)) | (~wins & winner);
                    }
                const CNX_V gw = (relu ? CNX_NAME(cnx_relu_grad)(g, best) : g) + (CNX_V){0};
                for (ptrdiff_t i = 0; i < kh; i++)
                    for (ptrdiff_t j = 0; j < kw; j++)
                        CNX_NAME(cnx_tile_store)(
                            dx + i * row + at + j * C,
                            (CNX_V)((winner == (CNX_I)(i * kw + j)) & (CNX_M)gw), how, C, ours);
            }
        })
    }
}

#undef CNX_TILE_CHUNKS

#if CNX_VBYTES == 64
/* Packed tiles (AVX-512, whose permutes take run-time lane indices): when a tile row's kw cells
 * fit one vector (kw * C <= L), one vector holds them all and permutes bring the kw lane groups
 * together. Tiles [0, end), where the vectors stay inside the rows; stores reach into the next
 * tile as in WIDE. Same results as the per-cell path: the forward reduces across each row, then
 * down the rows (row-major order); the backward down each column, then across the columns, ties
 * going to the smaller row. */

/* Tiles of a row that the packed path handles (0 when it does not apply). */
static inline ptrdiff_t CNX_NAME(cnx_packed_tiles)(ptrdiff_t row, ptrdiff_t kw, ptrdiff_t C,
                                                   ptrdiff_t Wo)
{
    if (kw * C > CNX_L || C >= CNX_L)
        return 0;
    ptrdiff_t end = 0;
    while (end < Wo && end * kw * C + CNX_L <= row && end * C + CNX_L <= Wo * C)
        end++;
    return end;
}

/* Lane indices: lanes[l] = l; channel[l] = l % C, and group[l] = l / C inside the kw groups
 * (-1 past them). */
static inline void CNX_NAME(cnx_packed_lanes)(ptrdiff_t kw, ptrdiff_t C, CNX_M* lanes,
                                              CNX_M* channel, CNX_M* group)
{
    ptrdiff_t c = 0, j = 0;
    for (ptrdiff_t l = 0; l < CNX_L; l++) {
        (*lanes)[l] = (CNX_I)l;
        (*channel)[l] = (CNX_I)c;
        (*group)[l] = j < kw ? (CNX_I)j : -1;
        if (++c == C) {
            c = 0;
            j++;
        }
    }
}

static inline __attribute__((always_inline)) void CNX_NAME(cnx_packed_forward)(
    const int mode, const int relu, const CNX_T* x, ptrdiff_t row, ptrdiff_t kh, ptrdiff_t kw,
    ptrdiff_t C, ptrdiff_t end, CNX_T* y, CNX_M lanes)
{
    const CNX_T count = (CNX_T)(kh * kw);
    for (ptrdiff_t ow = 0; ow < end; ow++) {
        const CNX_T* tile = x + ow * kw * C;
        CNX_V best = {0};
        if (mode == 2) {  /* column sums, then across the columns */
            CNX_V col = CNX_NAME(cnx_load)(tile);
            for (ptrdiff_t i = 1; i < kh; i++)
                col += CNX_NAME(cnx_load)(tile + i * row);
            best = col;
            for (ptrdiff_t j = 1; j < kw; j++)
                best += __builtin_shuffle(col, lanes + (CNX_I)(j * C));
            best = best / count;
        } else {  /* across each row, then down the rows: the first cell in row-major order */
            for (ptrdiff_t i = 0; i < kh; i++) {
                const CNX_V r = CNX_NAME(cnx_load)(tile + i * row);
                CNX_V h = r;
                for (ptrdiff_t j = 1; j < kw; j++) {
                    const CNX_V v = __builtin_shuffle(r, lanes + (CNX_I)(j * C));
                    h = CNX_NAME(cnx_blend)(CNX_NAME(cnx_beats)(v, h, mode), v, h);
                }
                best = i == 0 ? h : CNX_NAME(cnx_blend)(CNX_NAME(cnx_beats)(h, best, mode), h, best);
            }
        }
        if (relu)
            best = CNX_NAME(cnx_relu)(best);
        CNX_NAME(cnx_store)(y + ow * C, best, CNX_L);
    }
}

static inline __attribute__((always_inline)) void CNX_NAME(cnx_packed_backward)(
    const int mode, const int relu, const CNX_T* x, const CNX_T* dy, ptrdiff_t row, ptrdiff_t kh,
    ptrdiff_t kw, ptrdiff_t C, ptrdiff_t end, CNX_T* dx, CNX_M lanes, CNX_M channel,
    CNX_M group)
{
    const CNX_T count = (CNX_T)(kh * kw);
    for (ptrdiff_t ow = 0; ow < end; ow++) {
        const ptrdiff_t at = ow * kw * C;
        CNX_V g = __builtin_shuffle(CNX_NAME(cnx_load)(dy + ow * C), channel);
        if (mode == 2) {
            const CNX_V share = g / count + (CNX_V){0};
            for (ptrdiff_t i = 0; i < kh; i++)
                CNX_NAME(cnx_store)(dx + i * row + at, share, CNX_L);
            continue;
        }
        CNX_V col = CNX_NAME(cnx_load)(x + at);
        CNX_M col_row = {0}; /* the row of each column's winner */
        for (ptrdiff_t i = 1; i < kh; i++) {
            const CNX_V v = CNX_NAME(cnx_load)(x + i * row + at);
            const CNX_M wins = CNX_NAME(cnx_beats)(v, col, mode);
            col = CNX_NAME(cnx_blend)(wins, v, col);
            col_row = (wins & (CNX_I)i) | (~wins & col_row);
        }
        CNX_V best = col;
        CNX_M best_row = col_row, best_col = {0};
        for (ptrdiff_t j = 1; j < kw; j++) {
            const CNX_M shift = lanes + (CNX_I)(j * C);
            const CNX_V v = __builtin_shuffle(col, shift);
            const CNX_M v_row = __builtin_shuffle(col_row, shift);
            const CNX_M ties = (v == best) | ((v != v) & (best != best));
            const CNX_M wins = CNX_NAME(cnx_beats)(v, best, mode) | (ties & (v_row < best_row));
            best = CNX_NAME(cnx_blend)(wins, v, best);
            best_row = (wins & v_row) | (~wins & best_row);
            best_col = (wins & (CNX_I)j) | (~wins & best_col);
        }
        if (relu) /* lanes below C hold each channel's extreme */
            g = CNX_NAME(cnx_relu_grad)(g, __builtin_shuffle(best, channel));
        g += (CNX_V){0}; /* -0.0 -> +0.0, as in cnx_tile_backward */
        /* each lane's cell wins when its group is the winning column and its row the winner's */
        const CNX_M hit = (__builtin_shuffle(best_col, channel) == group);
        const CNX_M win_row = __builtin_shuffle(best_row, channel);
        for (ptrdiff_t i = 0; i < kh; i++)
            CNX_NAME(cnx_store)(dx + i * row + at,
                                (CNX_V)(hit & (win_row == (CNX_I)i) & (CNX_M)g), CNX_L);
    }
}
#else
static inline ptrdiff_t CNX_NAME(cnx_packed_tiles)(ptrdiff_t row, ptrdiff_t kw, ptrdiff_t C,
                                                   ptrdiff_t Wo)
{
    return 0; /* no run-time permutes below AVX-512 */
}
#endif

/* What every output row of a call shares: the first tile left to the per-cell path, and the
 * lane tables of the KEEP placement and (AVX-512) of the packed path. */
typedef struct {
    ptrdiff_t first;
    CNX_M ours, lanes, channel, group;
} CNX_NAME(cnx_plan);

static inline CNX_NAME(cnx_plan) CNX_NAME(cnx_make_plan)(ptrdiff_t row, ptrdiff_t kw,
                                                         ptrdiff_t C, ptrdiff_t Wo)
{
    CNX_NAME(cnx_plan) plan;
    plan.first = CNX_NAME(cnx_packed_tiles)(row, kw, C, Wo);
    plan.ours = CNX_NAME(cnx_own_lanes)(C);
#if CNX_VBYTES == 64
    CNX_NAME(cnx_packed_lanes)(kw, C, &plan.lanes, &plan.channel, &plan.group);
#endif
    return plan;
}

/* Offset of the first input row of output row r = n * Ho + oh: input row n * H + oh * kh. */
static inline ptrdiff_t CNX_NAME(cnx_band)(ptrdiff_t r, ptrdiff_t H, ptrdiff_t Ho, ptrdiff_t kh,
                                           ptrdiff_t row)
{
    return ((r / Ho) * H + (r % Ho) * kh) * row;
}

/* Output rows [r0, r1): packed tiles first, then the others cell by cell. */
static inline __attribute__((always_inline)) void CNX_NAME(cnx_rows_forward)(
    const int mode, const int relu, const ptrdiff_t kh, const ptrdiff_t kw, const CNX_T* x,
    ptrdiff_t H, ptrdiff_t row, ptrdiff_t C, ptrdiff_t Ho, ptrdiff_t Wo, ptrdiff_t r0,
    ptrdiff_t r1, CNX_T* y)
{
    const CNX_NAME(cnx_plan) plan = CNX_NAME(cnx_make_plan)(row, kw, C, Wo);
    for (ptrdiff_t r = r0; r < r1; r++) {
        const CNX_T* band = x + CNX_NAME(cnx_band)(r, H, Ho, kh, row);
#if CNX_VBYTES == 64
        CNX_NAME(cnx_packed_forward)(mode, relu, band, row, kh, kw, C, plan.first,
                                     y + r * Wo * C, plan.lanes);
#endif
        CNX_NAME(cnx_tile_forward)(mode, relu, band, row, kh, kw, C, plan.first, Wo,
                                   y + r * Wo * C, plan.ours);
    }
}

static inline __attribute__((always_inline)) void CNX_NAME(cnx_rows_backward)(
    const int mode, const int relu, const ptrdiff_t kh, const ptrdiff_t kw, const CNX_T* x,
    const CNX_T* dy, ptrdiff_t H, ptrdiff_t row, ptrdiff_t C, ptrdiff_t Ho, ptrdiff_t Wo,
    ptrdiff_t r0, ptrdiff_t r1, CNX_T* dx)
{
    const CNX_NAME(cnx_plan) plan = CNX_NAME(cnx_make_plan)(row, kw, C, Wo);
    for (ptrdiff_t r = r0; r < r1; r++) {
        const ptrdiff_t band = CNX_NAME(cnx_band)(r, H, Ho, kh, row);
#if CNX_VBYTES == 64
        CNX_NAME(cnx_packed_backward)(mode, relu, x + band, dy + r * Wo * C, row, kh, kw, C,
                                      plan.first, dx + band, plan.lanes, plan.channel,
                                      plan.group);
#endif
        CNX_NAME(cnx_tile_backward)(mode, relu, x + band, dy + r * Wo * C, row, kh, kw, C,
                                    plan.first, Wo, dx + band, plan.ours);
    }
}

/* CALL(mode, relu, kh, kw) with the mode, the ReLU flag (max and min only) and, for 2 x 2 tiles,
 * the size as constants (each call is compiled for its constants). */
#define CNX_MODES(CALL, KH, KW)                   \
    switch (mode + 3 * (relu != 0)) {             \
    case 0: CALL(0, 0, KH, KW); break;            \
    case 1: CALL(1, 0, KH, KW); break;            \
    case 3: CALL(0, 1, KH, KW); break;            \
    case 4: CALL(1, 1, KH, KW); break;            \
    default: CALL(2, 0, KH, KW);                  \
    }
#define CNX_SPECIALISE(CALL)         \
    if (kh == 2 && kw == 2) {        \
        CNX_MODES(CALL, 2, 2)        \
    } else {                         \
        CNX_MODES(CALL, kh, kw)      \
    }

/* Pool output rows [r0, r1) of tiles (see cnx_rows_forward); mode: 0 max, 1 min, 2 avg; relu:
 * relu(pool(x)) (max and min). */
static void CNX_NAME(cnx_pool_tile_rows)(const CNX_T* x, ptrdiff_t H, ptrdiff_t row, ptrdiff_t kh,
                                         ptrdiff_t kw, ptrdiff_t C, ptrdiff_t Ho, ptrdiff_t Wo,
                                         ptrdiff_t r0, ptrdiff_t r1, int mode, int relu, CNX_T* y)
{
#define CNX_FORWARD(M, R, KH, KW) \
    CNX_NAME(cnx_rows_forward)(M, R, KH, KW, x, H, row, C, Ho, Wo, r0, r1, y)
    CNX_SPECIALISE(CNX_FORWARD)
#undef CNX_FORWARD
}

/* The gradient of output rows [r0, r1) of tiles on their kh input rows each. */
static void CNX_NAME(cnx_pool_tile_grad_rows)(const CNX_T* x, const CNX_T* dy, ptrdiff_t H,
                                              ptrdiff_t row, ptrdiff_t kh, ptrdiff_t kw,
                                              ptrdiff_t C, ptrdiff_t Ho, ptrdiff_t Wo,
                                              ptrdiff_t r0, ptrdiff_t r1, int mode, int relu,
                                              CNX_T* dx)
{
#define CNX_BACKWARD(M, R, KH, KW) \
    CNX_NAME(cnx_rows_backward)(M, R, KH, KW, x, dy, H, row, C, Ho, Wo, r0, r1, dx)
    CNX_SPECIALISE(CNX_BACKWARD)
#undef CNX_BACKWARD
}

#undef CNX_SPECIALISE
#undef CNX_MODES

static const CNX_CAT2(cnx_pool_table, CNX_S) CNX_NAME(cnx_pool_table) = {
    CNX_NAME(cnx_pool_tile_rows), CNX_NAME(cnx_pool_tile_grad_rows),
};
