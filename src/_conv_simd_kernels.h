/* Type-generic body of the direct-convolution micro-kernels; included by _conv_simd.h once per
 * element type and instruction set (see _simd.h), after _simd_vec.h (CNX_V, CNX_L, loads and
 * stores), with CNX_RB and CNX_QB (block sizes) defined. No include guard. Ends with the table
 * cnx_table_<S>_<ISA> of these kernels.
 *
 * Layout: channels-last, C-contiguous. Channel-lane kernels update a block of CNX_RB
 * accumulators, each one vector of L output channels, by outer products (broadcast scalar x
 * vector). Kernel taps of one kernel row (kw, c) are addressed through `toff`: toff[t] is the
 * element offset of tap t = kw * C + c from a window's first cell; its length is a multiple of
 * CNX_RB. Pixel-lane kernels work on channel planes, consecutive output pixels in the lanes.
 */

/* Register blocks of np items (output pixels, or kernel taps) times nf vectors of output channels
 * (nf is 1 or 2; two vectors share each broadcast input, which saves loads when there are enough
 * channels). np * nf <= CNX_RB accumulators. A row of n items takes as few blocks as the largest
 * size allows (each block reloads the weights), and they are balanced: np is the smallest size
 * with that many blocks, but at least two thirds of CNX_RB / nf (smaller blocks load too much
 * per multiply-add). */
static inline int CNX_NAME(cnx_block_items)(int nf, ptrdiff_t n)
{
    const int most = CNX_RB / nf, least = (2 * most + 2) / 3;
    const ptrdiff_t blocks = (n + most - 1) / most;
    const ptrdiff_t balanced = blocks > 0 ? (n + blocks - 1) / blocks : most;
    return balanced < least ? least : (int)balanced;
}

/* `case NP:` of a switch over cnx_block_items(NF, n): STEP, a statement using the constants
 * nf_ = NF and np_ = NP. CNX_BLOCK_CASES_<NF> lists every size cnx_block_items can choose. */
#define CNX_BLOCK_CASE(NF, NP, STEP) \
    case NP: {                        \
        const int nf_ = NF, np_ = NP; \
        STEP;                         \
        break;                        \
    }
#if CNX_RB == 12
#define CNX_BLOCK_CASES_1(STEP)                                                         \
    CNX_BLOCK_CASE(1, 12, STEP) CNX_BLOCK_CASE(1, 11, STEP) CNX_BLOCK_CASE(1, 10, STEP) \
    CNX_BLOCK_CASE(1, 9, STEP) CNX_BLOCK_CASE(1, 8, STEP)
#define CNX_BLOCK_CASES_2(STEP) \
    CNX_BLOCK_CASE(2, 6, STEP) CNX_BLOCK_CASE(2, 5, STEP) CNX_BLOCK_CASE(2, 4, STEP)
#elif CNX_RB == 6
#define CNX_BLOCK_CASES_1(STEP) \
    CNX_BLOCK_CASE(1, 6, STEP) CNX_BLOCK_CASE(1, 5, STEP) CNX_BLOCK_CASE(1, 4, STEP)
#define CNX_BLOCK_CASES_2(STEP) CNX_BLOCK_CASE(2, 3, STEP) CNX_BLOCK_CASE(2, 2, STEP)
#else
#error "CNX_RB must be 6 or 12"
#endif

/* Taps per step of the direct convolution's unrolled tap loop. */
#define CNX_TU 6

/* Vector registers of the instruction set. */
#define CNX_NREGS (CNX_VBYTES == 64 ? 32 : 16)
/* The largest kernel extent (rows or columns) that kernels compile as a constant. */
#define CNX_MAX_K 7
/* switch (n) over 1 .. CNX_MAX_K, CASE(k) compiling each case with k as a constant. */
#define CNX_SWITCH_K(n, CASE) \
    switch (n) { CASE(1) CASE(2) CASE(3) CASE(4) CASE(5) CASE(6) CASE(7) }

/* The accumulators acc[p * nf + v] of a register block of np output pixels times nf vectors of
 * output channels from f0, set to the bias. */
static inline __attribute__((always_inline)) void CNX_NAME(cnx_block_bias)(
    const int nf, const int np, const CNX_T* bias, ptrdiff_t f0, CNX_V* acc)
{
    for (int v = 0; v < nf; v++) {
        const CNX_V b = CNX_NAME(cnx_load)(bias + f0 + v * CNX_L);
        for (int p = 0; p < np; p++)
            acc[p * nf + v] = b;
    }
}

/* Stores a register block (see cnx_block_bias) from output pixel ow0 into y (Wo, F), leaving out
 * the pixels past Wo and the channels past F. */
static inline __attribute__((always_inline)) void CNX_NAME(cnx_block_store)(
    const int nf, const int np, const CNX_V* acc, CNX_T* y, ptrdiff_t Wo, ptrdiff_t F,
    ptrdiff_t ow0, ptrdiff_t f0)
{
    const ptrdiff_t valid = Wo - ow0 < np ? Wo - ow0 : np;
    for (ptrdiff_t p = 0; p < valid; p++)
        for (int v = 0; v < nf; v++)
            CNX_NAME(cnx_store)(y + (ow0 + p) * F + f0 + v * CNX_L, acc[p * nf + v],
                                F - f0 - v * CNX_L);
}

/* One register block of a direct-convolution output row: np output pixels from ow0 times nf
 * vectors of output channels from f0 (constants once inlined). */
static inline __attribute__((always_inline)) void CNX_NAME(cnx_direct_block)(
    const int nf, const int np, const CNX_T* x, ptrdiff_t kh_step, ptrdiff_t KH, ptrdiff_t pix,
    const ptrdiff_t* toff, ptrdiff_t ntaps, const CNX_T* w, ptrdiff_t Fp, const CNX_T* bias,
    CNX_T* y, ptrdiff_t Wo, ptrdiff_t F, ptrdiff_t ow0, ptrdiff_t f0)
{
    CNX_V acc[CNX_RB];
    CNX_NAME(cnx_block_bias)(nf, np, bias, f0, acc);
    const int contiguous = toff[ntaps - 1] == ntaps - 1; /* taps t at offsets t (no dilation) */
    for (ptrdiff_t kh = 0; kh < KH; kh++) {
        const CNX_T* xk = x + kh * kh_step + ow0 * pix;
        const CNX_T* wt = w + kh * ntaps * Fp + f0;
        ptrdiff_t t = 0;
        if (contiguous) {
            /* each pixel's window through its own pointer, advanced every CNX_TU taps: the
             * broadcasts then use constant displacements, no address arithmetic */
            const CNX_T* xp[CNX_RB];
            for (int p = 0; p < np; p++)
                xp[p] = xk + p * pix;
            for (; t + CNX_TU <= ntaps; t += CNX_TU) {
                for (int u = 0; u < CNX_TU; u++, wt += Fp) {
                    CNX_V wv[2];
                    for (int v = 0; v < nf; v++)
                        wv[v] = CNX_NAME(cnx_load)(wt + v * CNX_L);
                    for (int p = 0; p < np; p++)
                        for (int v = 0; v < nf; v++)
                            acc[p * nf + v] += xp[p][u] * wv[v];
                }
                for (int p = 0; p < np; p++)
                    xp[p] += CNX_TU;
            }
        }
        for (; t < ntaps; t++, wt += Fp) {
            CNX_V wv[2];
            for (int v = 0; v < nf; v++)
                wv[v] = CNX_NAME(cnx_load)(wt + v * CNX_L);
            const CNX_T* xt = xk + toff[t];
            for (int p = 0; p < np; p++) {
                const CNX_T a = xt[p * pix];
                for (int v = 0; v < nf; v++)
                    acc[p * nf + v] += a * wv[v];
            }
        }
    }
    CNX_NAME(cnx_block_store)(nf, np, acc, y, Wo, F, ow0, f0);
}

/* One register block of a direct-convolution output row at horizontal stride and dilation 1,
 * sliding along the input row: np output pixels from ow0 times nf vectors of output channels
 * from f0, for a kernel KW cells wide (constants once inlined). Per kernel row and input
 * channel, the channel's KW weight vectors stay in registers, and each of the np + KW - 1 input
 * values, broadcast once, adds into the (up to KW) pixels whose windows hold it: np + KW - 1
 * broadcasts for np * KW multiply-adds, where cnx_direct_block broadcasts one per multiply-add
 * (measured on LeNet-5's 6->16 layer: 97% of the FMA peak against 80%). */
static inline __attribute__((always_inline)) void CNX_NAME(cnx_direct_slide_block)(
    const int nf, const int np, const int KW, const CNX_T* x, ptrdiff_t kh_step, ptrdiff_t KH,
    ptrdiff_t C, const CNX_T* w, ptrdiff_t Fp, const CNX_T* bias, CNX_T* y, ptrdiff_t Wo,
    ptrdiff_t F, ptrdiff_t ow0, ptrdiff_t f0)
{
    CNX_V acc[CNX_RB];
    CNX_NAME(cnx_block_bias)(nf, np, bias, f0, acc);
    for (ptrdiff_t kh = 0; kh < KH; kh++) {
        const CNX_T* xk = x + kh * kh_step + ow0 * C;
        const CNX_T* wk = w + kh * KW * C * Fp + f0;
        for (ptrdiff_t c = 0; c < C; c++) {
            CNX_V wv[2 * CNX_MAX_K]; /* wv[kw * nf + v] */
#pragma GCC unroll 8
            for (int kw = 0; kw < KW; kw++)
                for (int v = 0; v < nf; v++)
                    wv[kw * nf + v] = CNX_NAME(cnx_load)(wk + (kw * C + c) * Fp + v * CNX_L);
            const CNX_T* xj = xk + c;
#pragma GCC unroll 32
            for (int j = 0; j < np + KW - 1; j++, xj += C) {
                const CNX_T a = *xj;
#pragma GCC unroll 8
                for (int kw = 0; kw < KW; kw++) {
                    const int p = j - kw; /* the pixel whose window holds a at column kw */
                    if (p >= 0 && p < np)
                        for (int v = 0; v < nf; v++)
                            acc[p * nf + v] += a * wv[kw * nf + v];
                }
            }
        }
    }
    CNX_NAME(cnx_block_store)(nf, np, acc, y, Wo, F, ow0, f0);
}

/* cnx_direct_rows' blocks of np pixels times nf vectors from f0 along its rows (nf, np
 * constants once inlined): sliding (cnx_direct_slide_block) where `slide` says the stride and
 * dilation allow it and the kernel's width and the accumulators fit the registers, else tap by
 * tap. */
static inline __attribute__((always_inline)) void CNX_NAME(cnx_direct_blocks)(
    const int nf, const int np, int slide, const CNX_T* x, ptrdiff_t row_step, ptrdiff_t nrows,
    ptrdiff_t kh_step, ptrdiff_t KH, ptrdiff_t pix, const ptrdiff_t* toff, ptrdiff_t ntaps,
    const CNX_T* w, ptrdiff_t Fp, const CNX_T* bias, CNX_T* y, ptrdiff_t Wo, ptrdiff_t F,
    ptrdiff_t f0)
{
    if (slide) {
        const ptrdiff_t C = pix, KW = ntaps / C;
#define CNX_DIRECT_SLIDE_CASE(k)                                                              \
    case k:                                                                                   \
        if (nf * (np + k) + 1 <= CNX_NREGS) {                                                 \
            for (ptrdiff_t r = 0; r < nrows; r++)                                             \
                for (ptrdiff_t ow0 = 0; ow0 < Wo; ow0 += np)                                  \
                    CNX_NAME(cnx_direct_slide_block)(nf, np, k, x + r * row_step, kh_step, KH, \
                                                     C, w, Fp, bias, y + r * Wo * F, Wo, F,   \
                                                     ow0, f0);                                \
            return;                                                                           \
        }                                                                                     \
        break;
        CNX_SWITCH_K(KW, CNX_DIRECT_SLIDE_CASE)
#undef CNX_DIRECT_SLIDE_CASE
    }
    for (ptrdiff_t r = 0; r < nrows; r++)
        for (ptrdiff_t ow0 = 0; ow0 < Wo; ow0 += np)
            CNX_NAME(cnx_direct_block)(nf, np, x + r * row_step, kh_step, KH, pix, toff, ntaps, w,
                                       Fp, bias, y + r * Wo * F, Wo, F, ow0, f0);
}

/* nrows output rows of a direct convolution: y (nrows, Wo, F) = bias + sum over the kernel of
 * x * w. x: first cell of the first row's first window; output rows are row_step elements
 * apart, kernel rows kh_step, neighbouring output pixels pix, cells of C channels.
 * w: (KH, ntaps, Fp) with Fp a multiple of L; bias: (Fp,). Reads whole register blocks: x must
 * hold ceil(Wo / CNX_RB) * CNX_RB windows per row (the blocks chosen by cnx_block_items never
 * span more). At horizontal stride and dilation 1 (pix == C, taps at offsets 0 .. ntaps - 1), a
 * kernel up to CNX_MAX_K cells wide slides along the rows, adding the taps of each output pixel
 * in the order (kh, c, kw); else in the order of toff, (kh, kw, c). */
static void CNX_NAME(cnx_direct_rows)(const CNX_T* x, ptrdiff_t row_step, ptrdiff_t nrows,
                                      ptrdiff_t kh_step, ptrdiff_t KH, ptrdiff_t pix,
                                      const ptrdiff_t* toff, ptrdiff_t ntaps, const CNX_T* w,
                                      ptrdiff_t Fp, const CNX_T* bias, CNX_T* y, ptrdiff_t Wo,
                                      ptrdiff_t F, ptrdiff_t C)
{
    const int slide = pix == C && toff[ntaps - 1] == ntaps - 1;
#define CNX_DIRECT_BLOCKS                                                                      \
    CNX_NAME(cnx_direct_blocks)(nf_, np_, slide, x, row_step, nrows, kh_step, KH, pix, toff,    \
                                ntaps, w, Fp, bias, y, Wo, F, f0)
    ptrdiff_t f0 = 0;
    for (; f0 + 2 * CNX_L <= Fp; f0 += 2 * CNX_L)
        switch (CNX_NAME(cnx_block_items)(2, Wo)) { CNX_BLOCK_CASES_2(CNX_DIRECT_BLOCKS) }
    for (; f0 < Fp; f0 += CNX_L)
        switch (CNX_NAME(cnx_block_items)(1, Wo)) { CNX_BLOCK_CASES_1(CNX_DIRECT_BLOCKS) }
#undef CNX_DIRECT_BLOCKS
}

/* One register block of the weight gradient over output rows [oh0, oh1): np kernel taps from t0
 * times nf vectors of output channels from f0 (constants once inlined). */
static inline __attribute__((always_inline)) void CNX_NAME(cnx_weight_grad_block)(
    const int nf, const int np, const CNX_T* x, ptrdiff_t row_step, ptrdiff_t pix,
    const ptrdiff_t* toff, ptrdiff_t ntaps, const CNX_T* dy, ptrdiff_t Wo, ptrdiff_t Fp,
    CNX_T* dw, ptrdiff_t oh0, ptrdiff_t oh1, ptrdiff_t t0, ptrdiff_t f0)
{
    ptrdiff_t off[CNX_RB];
    for (int p = 0; p < np; p++)
        off[p] = toff[t0 + p];
    CNX_V acc[CNX_RB];
    for (int r = 0; r < CNX_RB; r++)
        acc[r] = (CNX_V){0};
    for (ptrdiff_t oh = oh0; oh < oh1; oh++) {
        const CNX_T* xr = x + oh * row_step;
        const CNX_T* dr = dy + oh * Wo * Fp + f0;
        for (ptrdiff_t ow = 0; ow < Wo; ow++) {
            CNX_V d[2];
            for (int v = 0; v < nf; v++)
                d[v] = CNX_NAME(cnx_load)(dr + ow * Fp + v * CNX_L);
            const CNX_T* px = xr + ow * pix;
            for (int p = 0; p < np; p++) {
                const CNX_T a = px[off[p]];
                for (int v = 0; v < nf; v++)
                    acc[p * nf + v] += a * d[v];
            }
        }
    }
    const ptrdiff_t valid = ntaps - t0 < np ? ntaps - t0 : np;
    for (ptrdiff_t p = 0; p < valid; p++) {
        for (int v = 0; v < nf; v++) {
            CNX_T* dst = dw + (t0 + p) * Fp + f0 + v * CNX_L;
            CNX_NAME(cnx_store)(dst, CNX_NAME(cnx_load)(dst) + acc[p * nf + v], CNX_L);
        }
    }
}

/* Weight gradient of one sample and one kernel row: dw (ntaps, Fp) += sum over the output
 * pixels (oh, ow) of x[window(oh, ow) + toff[t]] * dy[oh, ow, :]. x: first cell of the first
 * window; output rows are row_step elements apart in x, pixels pix apart. dy: (Ho, Wo, Fp).
 * Output rows are taken in tiles of about CNX_TILE_PIXELS pixels, so that a tile's inputs stay
 * in cache while every (tap block, channel block) accumulates over it. */
#ifndef CNX_TILE_PIXELS
#define CNX_TILE_PIXELS 128
#endif
static void CNX_NAME(cnx_weight_grad)(const CNX_T* x, ptrdiff_t row_step, ptrdiff_t pix,
                                      const ptrdiff_t* toff, ptrdiff_t ntaps, const CNX_T* dy,
                                      ptrdiff_t Ho, ptrdiff_t Wo, ptrdiff_t Fp, CNX_T* dw)
{
#define CNX_WEIGHT_GRAD_BLOCKS                                                               \
    for (ptrdiff_t t0 = 0; t0 < ntaps; t0 += np_)                                             \
    CNX_NAME(cnx_weight_grad_block)(nf_, np_, x, row_step, pix, toff, ntaps, dy, Wo, Fp, dw, \
                                    oh0, oh1, t0, f0)
    const ptrdiff_t tile_rows = Wo >= CNX_TILE_PIXELS ? 1 : CNX_TILE_PIXELS / Wo;
    for (ptrdiff_t oh0 = 0; oh0 < Ho; oh0 += tile_rows) {
        const ptrdiff_t oh1 = oh0 + tile_rows < Ho ? oh0 + tile_rows : Ho;
        ptrdiff_t f0 = 0;
        for (; f0 + 2 * CNX_L <= Fp; f0 += 2 * CNX_L)
            switch (CNX_NAME(cnx_block_items)(2, ntaps)) { CNX_BLOCK_CASES_2(CNX_WEIGHT_GRAD_BLOCKS) }
        for (; f0 < Fp; f0 += CNX_L)
            switch (CNX_NAME(cnx_block_items)(1, ntaps)) { CNX_BLOCK_CASES_1(CNX_WEIGHT_GRAD_BLOCKS) }
    }
#undef CNX_WEIGHT_GRAD_BLOCKS
}

/* switch (n) over 1 .. CNX_RB, CASE(k) compiling each case with k as a constant. */
#if CNX_RB == 12
#define CNX_SWITCH_RB(n, CASE)                                                                  \
    switch (n) {                                                                                \
        CASE(1) CASE(2) CASE(3) CASE(4) CASE(5) CASE(6) CASE(7) CASE(8) CASE(9) CASE(10)        \
        CASE(11) CASE(12)                                                                       \
    }
#else
#define CNX_SWITCH_RB(n, CASE) \
    switch (n) { CASE(1) CASE(2) CASE(3) CASE(4) CASE(5) CASE(6) }
#endif

/* One block of cnx_span_weight_grad over output rows [oh0, oh1) of one sample: nfb output
 * channels from f0 times nv (1 or 2) span vectors at element offsets so[0 .. nv) (nfb and nv
 * constants once inlined), added into dwt at vectors v0 .. v0 + nv - 1 of rows f0 .. */
static inline __attribute__((always_inline)) void CNX_NAME(cnx_span_wgrad_block)(
    const int nfb, const int nv, const CNX_T* x, ptrdiff_t row_step, ptrdiff_t pix,
    const CNX_T* dy, ptrdiff_t Wo, ptrdiff_t F, ptrdiff_t oh0, ptrdiff_t oh1, ptrdiff_t f0,
    const ptrdiff_t* so, CNX_T* dwt, ptrdiff_t ldw, ptrdiff_t v0)
{
    CNX_V acc[CNX_RB][2];
    for (int i = 0; i < nfb; i++)
        for (int v = 0; v < nv; v++)
            acc[i][v] = (CNX_V){0};
    for (ptrdiff_t oh = oh0; oh < oh1; oh++) {
        const CNX_T* xr = x + oh * row_step;
        const CNX_T* d = dy + oh * Wo * F + f0;
        for (ptrdiff_t ow = 0; ow < Wo; ow++, xr += pix, d += F) {
            CNX_V xv[2];
            for (int v = 0; v < nv; v++)
                xv[v] = CNX_NAME(cnx_load)(xr + so[v]);
            for (int i = 0; i < nfb; i++) {
                const CNX_T a = d[i];
                for (int v = 0; v < nv; v++)
                    acc[i][v] += a * xv[v];
            }
        }
    }
    for (int i = 0; i < nfb; i++)
        for (int v = 0; v < nv; v++) {
            CNX_T* dst = dwt + (f0 + i) * ldw + (v0 + v) * CNX_L;
            CNX_NAME(cnx_store)(dst, CNX_NAME(cnx_load)(dst) + acc[i][v], CNX_L);
        }
}

/* Weight gradient of one kernel row over ns samples, the row's span of input cells and channels
 * in the lanes and the output channels broadcast:
 * dwt[f, v * L + l] = sum over the samples and output pixels (oh, ow) of
 * dy[oh, ow, f] * x[oh * row_step + ow * pix + so_v + l] for the span vectors v at
 * so_v = min(v * L, span - L): the last one is moved back to end at the span (span >= L), so
 * reads stay inside the window. x: the first sample's first window cell of this kernel row;
 * samples are x_step (x) and Ho * Wo * F (dy (Ho, Wo, F)) apart; dwt: (F, ldw), ldw >=
 * ceil(span / L) * L. Output rows go in tiles of about CNX_TILE_PIXELS pixels, so a tile stays
 * in cache while every block of channels and span vectors passes over it. */
static void CNX_NAME(cnx_span_weight_grad)(const CNX_T* x, ptrdiff_t x_step, ptrdiff_t row_step,
                                           ptrdiff_t pix, const CNX_T* dy, ptrdiff_t ns,
                                           ptrdiff_t Ho, ptrdiff_t Wo, ptrdiff_t F,
                                           ptrdiff_t span, CNX_T* dwt, ptrdiff_t ldw)
{
    const ptrdiff_t nvec = (span + CNX_L - 1) / CNX_L;
    const ptrdiff_t fblocks = (F + CNX_RB - 1) / CNX_RB, nfb = (F + fblocks - 1) / fblocks;
    const ptrdiff_t tile_rows = Wo >= CNX_TILE_PIXELS ? 1 : CNX_TILE_PIXELS / Wo;
    memset(dwt, 0, (size_t)(F * ldw) * sizeof(CNX_T));
    for (ptrdiff_t n = 0; n < ns; n++) {
        const CNX_T* xn = x + n * x_step;
        const CNX_T* dn = dy + n * Ho * Wo * F;
        for (ptrdiff_t oh0 = 0; oh0 < Ho; oh0 += tile_rows) {
            const ptrdiff_t oh1 = oh0 + tile_rows < Ho ? oh0 + tile_rows : Ho;
            for (ptrdiff_t f0 = 0; f0 < F; f0 += nfb) {
                for (ptrdiff_t v = 0; v < nvec; v += 2) {
                    const ptrdiff_t so[2] = {v * CNX_L < span - CNX_L ? v * CNX_L : span - CNX_L,
                                             (v + 1) * CNX_L < span - CNX_L ? (v + 1) * CNX_L
                                                                            : span - CNX_L};
#define CNX_SPAN_CASE(k)                                                                    \
    case k:                                                                                 \
        if (v + 1 < nvec)                                                                   \
            CNX_NAME(cnx_span_wgrad_block)(k, 2, xn, row_step, pix, dn, Wo, F, oh0, oh1, f0, \
                                           so, dwt, ldw, v);                                \
        else                                                                                \
            CNX_NAME(cnx_span_wgrad_block)(k, 1, xn, row_step, pix, dn, Wo, F, oh0, oh1, f0, \
                                           so, dwt, ldw, v);                                \
        break;
                    CNX_SWITCH_RB(F - f0 < nfb ? F - f0 : nfb, CNX_SPAN_CASE)
#undef CNX_SPAN_CASE
                }
            }
        }
    }
}

#undef CNX_SWITCH_RB

/* One step of cnx_input_grad_rows: pixel ow and nv (1 or 2) vectors of the kernel rows' weights
 * from wt (KH, F, Sp), summed over the nk kernel rows khs[j] and the output channels, for nrb
 * rows (nv and nrb constants once inlined), then added at element `off` of the first nr of them;
 * only the lanes set in `keep` of the last vector are added. Each broadcast dy value feeds nv
 * multiply-adds. */
static inline __attribute__((always_inline)) void CNX_NAME(cnx_input_grad_step)(
    const int nrb, const int nv, const CNX_T* const* dy_rows, ptrdiff_t nk, const ptrdiff_t* khs,
    CNX_T* const* dx_rows, ptrdiff_t nr, ptrdiff_t ow, ptrdiff_t F, const CNX_T* wt,
    ptrdiff_t Sp, ptrdiff_t off, CNX_M keep)
{
    CNX_V acc[CNX_RB][2];
    for (int r = 0; r < nrb; r++)
        for (int v = 0; v < nv; v++)
            acc[r][v] = (CNX_V){0};
    for (ptrdiff_t j = 0; j < nk; j++) {
        const CNX_T* wk = wt + khs[j] * F * Sp;
        const CNX_T* d[CNX_RB];
        for (int r = 0; r < nrb; r++) {
            d[r] = dy_rows[r * nk + j] + ow * F;
            __builtin_prefetch(d[r] + F, 0, 3); /* the next pixel's: 4-10% for F < L */
        }
        for (ptrdiff_t f = 0; f < F; f++) {
            CNX_V wv[2];
            for (int v = 0; v < nv; v++)
                wv[v] = CNX_NAME(cnx_load)(wk + f * Sp + v * CNX_L);
            for (int r = 0; r < nrb; r++) {
                const CNX_T a = d[r][f];
                for (int v = 0; v < nv; v++)
                    acc[r][v] += a * wv[v];
            }
        }
    }
    for (int r = 0; r < nrb; r++) { /* constant bounds keep acc in registers */
        if (r < nr) {
            CNX_T* dst = dx_rows[r] + off;
            acc[r][nv - 1] = CNX_NAME(cnx_blend)(keep, acc[r][nv - 1], (CNX_V){0});
            for (int v = 0; v < nv; v++)
                CNX_NAME(cnx_store)(dst + v * CNX_L,
                                    CNX_NAME(cnx_load)(dst + v * CNX_L) + acc[r][v], CNX_L);
        }
    }
}

/* cnx_input_grad_rows for nrb rows (a constant once inlined), the first nr of them stored. */
static inline __attribute__((always_inline)) void CNX_NAME(cnx_input_grad_block)(
    const int nrb, const CNX_T* const* dy_rows, ptrdiff_t nk, const ptrdiff_t* khs,
    CNX_T* const* dx_rows, ptrdiff_t nr, ptrdiff_t Wo, ptrdiff_t F, const CNX_T* wt,
    ptrdiff_t Sp, ptrdiff_t pix, CNX_M all, CNX_M last)
{
    for (ptrdiff_t ow = 0; ow < Wo; ow++) {
        const ptrdiff_t off = ow * pix;
        ptrdiff_t s0 = 0;
        for (; s0 + 2 * CNX_L <= Sp; s0 += 2 * CNX_L)
            CNX_NAME(cnx_input_grad_step)(nrb, 2, dy_rows, nk, khs, dx_rows, nr, ow, F, wt + s0,
                                          Sp, off + s0, s0 + 2 * CNX_L == Sp ? last : all);
        if (s0 < Sp)
            CNX_NAME(cnx_input_grad_step)(nrb, 1, dy_rows, nk, khs, dx_rows, nr, ow, F, wt + s0,
                                          Sp, off + s0, last);
    }
}

/* Rows per pass of cnx_input_grad_rows below a whole register block: enough accumulators
 * (2 per row) to hide the multiply-add latency. */
#define CNX_IG_ROWS (CNX_RB / 3)

/* cnx_input_grad_block for a whole register block of rows, and for CNX_IG_ROWS; each in its own
 * function, so that the registers are allocated for one block size. */
#define CNX_IG_PASS(SUFFIX, NRB)                                                                \
    static __attribute__((noinline)) void CNX_NAME(SUFFIX)(                                    \
        const CNX_T* const* dy_rows, ptrdiff_t nk, const ptrdiff_t* khs, CNX_T* const* dx_rows,  \
        ptrdiff_t nr, ptrdiff_t Wo, ptrdiff_t F, const CNX_T* wt, ptrdiff_t Sp, ptrdiff_t pix,  \
        CNX_M all, CNX_M last)                                                                   \
    {                                                                                            \
        CNX_NAME(cnx_input_grad_block)(NRB, dy_rows, nk, khs, dx_rows, nr, Wo, F, wt, Sp, pix,  \
                                       all, last);                                               \
    }
CNX_IG_PASS(cnx_input_grad_whole, CNX_RB)
CNX_IG_PASS(cnx_input_grad_part, CNX_IG_ROWS)
#undef CNX_IG_PASS

/* The lanes of the last vector of a span of `span` elements padded to Sp (a multiple of L) that
 * the span reaches: all bits set there, clear past it. */
static inline CNX_M CNX_NAME(cnx_span_lanes)(ptrdiff_t Sp, ptrdiff_t span)
{
    CNX_I lanes[CNX_VBYTES / sizeof(CNX_T)];
    for (ptrdiff_t i = 0; i < CNX_L; i++)
        lanes[i] = (Sp - CNX_L + i < span) ? -1 : 0;
    CNX_M m;
    memcpy(&m, lanes, sizeof m);
    return m;
}

/* Input gradient of nr <= CNX_RB rows of the padded input gradient, gathered from the output
 * rows that reach them: for every pixel ow,
 * dx_rows[r][ow * pix + s] += sum_{j < nk, f} dy_rows[r * nk + j][ow * F + f] * wt[khs[j], f, s]
 * for s in [0, span), where s runs over one kernel row's span of input cells and channels and
 * dy_rows[r * nk + j] (Wo, F) is the output-gradient row that reaches row r through kernel row
 * khs[j]. wt: (KH, F, Sp), Sp >= span a multiple of L. A whole register block of rows goes in one
 * pass, fewer in passes of CNX_IG_ROWS rows, so dy_rows holds pointers for nr rounded up to a
 * multiple of CNX_IG_ROWS (rows past nr are computed, not stored). Every dx row needs Sp
 * elements of slack past (Wo - 1) * pix + span (zeros are added there, also for a NaN or
 * infinite dy). The span goes two vectors at a time (one for an odd last vector); each dx vector
 * is read and written once per pixel, after all its kernel rows and channels. */
static void CNX_NAME(cnx_input_grad_rows)(const CNX_T* const* dy_rows, ptrdiff_t nk,
                                          const ptrdiff_t* khs, CNX_T* const* dx_rows,
                                          ptrdiff_t nr, ptrdiff_t Wo, ptrdiff_t F,
                                          const CNX_T* wt, ptrdiff_t Sp, ptrdiff_t span,
                                          ptrdiff_t pix)
{
    /* lanes of a full vector, and of the span's last vector */
    const CNX_M all = CNX_NAME(cnx_span_lanes)(Sp, Sp), last = CNX_NAME(cnx_span_lanes)(Sp, span);
    if (nr == CNX_RB) {
        CNX_NAME(cnx_input_grad_whole)(dy_rows, nk, khs, dx_rows, nr, Wo, F, wt, Sp, pix, all,
                                       last);
        return;
    }
    for (ptrdiff_t r0 = 0; r0 < nr; r0 += CNX_IG_ROWS)
        CNX_NAME(cnx_input_grad_part)(dy_rows + r0 * nk, nk, khs, dx_rows + r0, nr - r0, Wo, F,
                                      wt, Sp, pix, all, last);
}

#undef CNX_IG_ROWS

/* Planar convolution: output channels per block. Each loaded vector of input pixels feeds
 * CNX_PFB multiply-adds; CNX_QB x CNX_PFB accumulators + CNX_PFB weights + 1 input fit the
 * register file (AVX-512: 24 + 5 of 32; AVX2/SSE: 12 + 3 of 16). */
#define CNX_PFB (CNX_RB / 3)

/* One block of cnx_planar_conv: nfb (<= CNX_PFB, a constant once inlined) output channels from
 * co, their planes at out + f * oplane. */
static inline __attribute__((always_inline)) void CNX_NAME(cnx_planar_conv_block)(
    const int nfb, const CNX_T* in, ptrdiff_t plane, ptrdiff_t Cin, const ptrdiff_t* qoff,
    ptrdiff_t ntaps, const CNX_T* w, ptrdiff_t Cout, ptrdiff_t co, CNX_T* out, ptrdiff_t oplane,
    ptrdiff_t nq)
{
    const ptrdiff_t block = CNX_QB * CNX_L;
    for (ptrdiff_t q = 0; q < nq; q += block) {
        const ptrdiff_t q0 = q + block > nq && nq >= block ? nq - block : q;
        CNX_V acc[CNX_QB][CNX_PFB];
        for (int r = 0; r < CNX_QB; r++)
            for (int f = 0; f < nfb; f++)
                acc[r][f] = (CNX_V){0};
        for (ptrdiff_t c = 0; c < Cin; c++) {
            const CNX_T* ic = in + c * plane + q0;
            const CNX_T* wc = w + c * Cout + co;
            for (ptrdiff_t t = 0; t < ntaps; t++) {
                const CNX_T* src = ic + qoff[t];
                CNX_T wv[CNX_PFB];
                for (int f = 0; f < nfb; f++)
                    wv[f] = wc[t * Cin * Cout + f];
                for (int r = 0; r < CNX_QB; r++) {
                    const CNX_V x = CNX_NAME(cnx_load)(src + r * CNX_L);
                    for (int f = 0; f < nfb; f++)
                        acc[r][f] += x * wv[f];
                }
            }
        }
        for (int f = 0; f < nfb; f++)
            for (int r = 0; r < CNX_QB; r++)
                CNX_NAME(cnx_store)(out + f * oplane + q0 + r * CNX_L, acc[r][f], CNX_L);
    }
}

/* Planar convolution of a single output channel: CNX_ROWS output vectors one input row pitch
 * apart share their loads, since output row r with kernel row kh reads input row r + kh. Per
 * (c, kw) that is CNX_ROWS + KH - 1 loads for CNX_ROWS * KH multiply-adds. KH (<= CNX_MAX_K,
 * a constant once inlined) kernel rows at dilation 1. */
#define CNX_ROWS (CNX_RB == 12 ? 8 : 4)

static inline __attribute__((always_inline)) void CNX_NAME(cnx_planar_rows_block)(
    const int KH, const CNX_T* in, ptrdiff_t plane, ptrdiff_t Cin, ptrdiff_t pitch, ptrdiff_t KW,
    ptrdiff_t dw, const CNX_T* w, ptrdiff_t Cout, ptrdiff_t co, CNX_T* out, ptrdiff_t q0)
{
    CNX_V acc[CNX_ROWS];
    for (int r = 0; r < CNX_ROWS; r++)
        acc[r] = (CNX_V){0};
    for (ptrdiff_t c = 0; c < Cin; c++) {
        const CNX_T* base = in + c * plane + q0;
        for (ptrdiff_t kw = 0; kw < KW; kw++) {
            CNX_V xs[CNX_ROWS + CNX_MAX_K - 1];
            for (int u = 0; u < CNX_ROWS + KH - 1; u++)
                xs[u] = CNX_NAME(cnx_load)(base + u * pitch + kw * dw);
            for (int kh = 0; kh < KH; kh++) {
                const CNX_T wv = w[((kh * KW + kw) * Cin + c) * Cout + co];
                for (int r = 0; r < CNX_ROWS; r++)
                    acc[r] += xs[r + kh] * wv;
            }
        }
    }
    for (int r = 0; r < CNX_ROWS; r++)
        CNX_NAME(cnx_store)(out + q0 + r * pitch, acc[r], CNX_L);
}

/* cnx_planar_conv for one output channel, taps (kh, kw) at kh * pitch + kw * dw: blocks of
 * CNX_ROWS rows times the vectors of a row pitch, the last of each moved back to end at row Ho
 * and at the row's end (needs Ho >= CNX_ROWS and pitch >= L), so reads and writes stay within
 * those of cnx_planar_conv. */
static void CNX_NAME(cnx_planar_rows)(const CNX_T* in, ptrdiff_t plane, ptrdiff_t Cin,
                                      ptrdiff_t pitch, ptrdiff_t KH, ptrdiff_t KW, ptrdiff_t dw,
                                      const CNX_T* w, ptrdiff_t Cout, ptrdiff_t co, CNX_T* out,
                                      ptrdiff_t Ho)
{
    for (ptrdiff_t i = 0; i < Ho; i += CNX_ROWS) {
        const ptrdiff_t q_row = (i + CNX_ROWS > Ho ? Ho - CNX_ROWS : i) * pitch;
        for (ptrdiff_t q = q_row; q < q_row + pitch; q += CNX_L) {
            const ptrdiff_t q0 = q + CNX_L > q_row + pitch ? q_row + pitch - CNX_L : q;
#define CNX_ROWS_CASE(k)                                                                        \
    case k:                                                                                     \
        CNX_NAME(cnx_planar_rows_block)(k, in, plane, Cin, pitch, KW, dw, w, Cout, co, out, q0); \
        break;
            CNX_SWITCH_K(KH, CNX_ROWS_CASE)
#undef CNX_ROWS_CASE
        }
    }
}

/* Stride-1 convolution over channel planes, output pixels in vector lanes (few output
 * channels). Computes the nco output planes from `co`: out[f * oplane + q] = sum_{c, t}
 * w[(t * Cin + c) * Cout + co + f] * in[c * plane + q + qoff[t]] for q in [0, nq), where q
 * flattens (row, column) with the input's row pitch (columns past the output width are computed
 * and dropped by the caller). Works in blocks of CNX_QB vectors; the last block is moved back to
 * end at nq, so every plane must allow reads up to max(nq, CNX_QB * L) + max(qoff) and each
 * output plane must hold max(nq, CNX_QB * L) values. */
static void CNX_NAME(cnx_planar_conv)(const CNX_T* in, ptrdiff_t plane, ptrdiff_t Cin,
                                      const ptrdiff_t* qoff, ptrdiff_t ntaps, const CNX_T* w,
                                      ptrdiff_t Cout, ptrdiff_t co, ptrdiff_t nco, CNX_T* out,
                                      ptrdiff_t oplane, ptrdiff_t nq, ptrdiff_t pitch,
                                      ptrdiff_t KH, ptrdiff_t dh, ptrdiff_t dw)
{
    const ptrdiff_t Ho = nq / pitch;
    if (nco == 1 && dh == 1 && KH <= CNX_MAX_K && Ho >= CNX_ROWS && pitch >= CNX_L &&
        Ho * pitch == nq) {
        CNX_NAME(cnx_planar_rows)(in, plane, Cin, pitch, KH, ntaps / KH, dw, w, Cout, co, out,
                                  Ho);
        return;
    }
    for (ptrdiff_t f0 = 0; f0 < nco; f0 += CNX_PFB) {
        CNX_T* of = out + f0 * oplane;
        switch (nco - f0 < CNX_PFB ? nco - f0 : CNX_PFB) {
        case 1:
            CNX_NAME(cnx_planar_conv_block)(1, in, plane, Cin, qoff, ntaps, w, Cout, co + f0, of,
                                            oplane, nq);
            break;
#if CNX_PFB > 2
        case 3:
            CNX_NAME(cnx_planar_conv_block)(3, in, plane, Cin, qoff, ntaps, w, Cout, co + f0, of,
                                            oplane, nq);
            break;
        case 4:
            CNX_NAME(cnx_planar_conv_block)(4, in, plane, Cin, qoff, ntaps, w, Cout, co + f0, of,
                                            oplane, nq);
            break;
#endif
        default:
            CNX_NAME(cnx_planar_conv_block)(2, in, plane, Cin, qoff, ntaps, w, Cout, co + f0, of,
                                            oplane, nq);
        }
    }
}

#undef CNX_PFB
/* Expanded rows: few input channels C and few output channels F (stride 1, dilation 1). Lanes
 * hold an output row's flat NHWC values t = j * F + f, so outputs and output gradients are used
 * as they lie (no channel planes). The input row r of channel c is used expanded,
 * E_c[r][t] = x[r][t / F][c] (each pixel repeated F times), each vector of it permuted from one
 * load of the zero-bordered NHWC input (a vector's pixels times C fit one vector); then
 * y[i][t] = b[f] + sum_{c, kh, kw} E_c[i + kh][t + kw * F] * w[kh][kw][c][f] and dw[kh][kw][c][f]
 * sums E_c[i + kh][t + kw * F] * dy[i][t] over the rows i and the t with t % F == f. A vector
 * starting at t0 sees channels (t0 + l) % F in lane l: weights come as one vector per residue
 * p = t0 % F, wt[p][c][kh][kw][l] = w[kh][kw][c][(p + l) % F] (bt[p] for the bias), and
 * gradient sums are kept per residue and folded into channels by the caller. Run-time lane
 * permutes, hence AVX-512 only. */
#if CNX_VBYTES == 64

/* The permute of the input vector that starts at pixel t0 / F, channel c into E_c from t0, for
 * the residue p = t0 % F: lane l takes element ((p + l) / F) * C. */
static inline CNX_M CNX_NAME(cnx_expand_index)(ptrdiff_t p, ptrdiff_t F, ptrdiff_t C)
{
    CNX_M index;
    ptrdiff_t pixel = 0, rep = p;
    for (ptrdiff_t l = 0; l < CNX_L; l++) {
        index[l] = (CNX_I)(pixel * C);
        if (++rep == F) {
            rep = 0;
            pixel++;
        }
    }
    return index;
}

/* The vector of E_c whose input pixels start at `src` (pixel, channel c), permuted by `index`. */
#define CNX_EXPANDED(src, index) __builtin_shuffle(CNX_NAME(cnx_load)(src), (index))

/* Output rows i0 .. i0 + rows - 1 at flat offset t0 (x0: the first row's pixel t0 / F): each
 * expanded vector feeds up to KH rows (rows <= CNX_ROWS and KH constants once inlined). */
static inline __attribute__((always_inline)) void CNX_NAME(cnx_expanded_block)(
    const int rows, const int KH, const CNX_T* x0, ptrdiff_t row_step, CNX_M index, ptrdiff_t C,
    ptrdiff_t KW, const CNX_T* wt, const CNX_V bias, CNX_T* y, ptrdiff_t yrow)
{
    CNX_V acc[CNX_ROWS];
    for (int r = 0; r < rows; r++)
        acc[r] = bias;
    for (ptrdiff_t c = 0; c < C; c++, x0++) {
        const CNX_T* wc = wt + c * KH * KW * CNX_L;
        for (ptrdiff_t kw = 0; kw < KW; kw++) {
            CNX_V xs[CNX_ROWS + CNX_MAX_K - 1];
            for (int u = 0; u < rows + KH - 1; u++)
                xs[u] = CNX_EXPANDED(x0 + u * row_step + kw * C, index);
            for (int kh = 0; kh < KH; kh++) {
                const CNX_V wv = CNX_NAME(cnx_load)(wc + (kh * KW + kw) * CNX_L);
                for (int r = 0; r < rows; r++)
                    acc[r] += xs[r + kh] * wv;
            }
        }
    }
    for (int r = 0; r < rows; r++)
        CNX_NAME(cnx_store)(y + r * yrow, acc[r], CNX_L);
}

/* One sample: y (Ho, Wo * F values) from its zero-bordered input x (Ho + KH - 1 rows of
 * row_step values, (pixel, channel) interleaved, with a vector of slack at the end). Blocks of
 * CNX_ROWS rows by one vector, the last of each moved back to end at row Ho and at the row's
 * end (the last block of rows half as tall when that covers the rest): needs Ho >= CNX_ROWS,
 * Wo * F >= L and KH <= CNX_MAX_K. */
static void CNX_NAME(cnx_expanded_conv)(const CNX_T* x, ptrdiff_t row_step, ptrdiff_t C,
                                        ptrdiff_t KH, ptrdiff_t KW, ptrdiff_t F, const CNX_T* wt,
                                        const CNX_T* bt, CNX_T* y, ptrdiff_t Ho, ptrdiff_t Wo)
{
    const ptrdiff_t n = Wo * F;
    for (ptrdiff_t t = 0; t < n; t += CNX_L) {
        const ptrdiff_t t0 = t + CNX_L > n ? n - CNX_L : t, p = t0 % F;
        const CNX_M index = CNX_NAME(cnx_expand_index)(p, F, C);
        const CNX_T* wp = wt + p * C * KH * KW * CNX_L;
        const CNX_V bias = CNX_NAME(cnx_load)(bt + p * CNX_L);
        for (ptrdiff_t i = 0; i < Ho; i += CNX_ROWS) {
            /* the last block moved back to end at row Ho; half as tall when that is enough */
            const int half = i + CNX_ROWS > Ho && Ho - i <= CNX_ROWS / 2;
            const ptrdiff_t i0 = half ? Ho - CNX_ROWS / 2 : i + CNX_ROWS > Ho ? Ho - CNX_ROWS : i;
            const CNX_T* x0 = x + i0 * row_step + (t0 / F) * C;
#define CNX_EXPANDED_CASE(k)                                                                \
    case k:                                                                                 \
        if (half)                                                                           \
            CNX_NAME(cnx_expanded_block)(CNX_ROWS / 2, k, x0, row_step, index, C, KW, wp,   \
                                         bias, y + i0 * n + t0, n);                         \
        else                                                                                \
            CNX_NAME(cnx_expanded_block)(CNX_ROWS, k, x0, row_step, index, C, KW, wp, bias, \
                                         y + i0 * n + t0, n);                               \
        break;
            CNX_SWITCH_K(KH, CNX_EXPANDED_CASE)
#undef CNX_EXPANDED_CASE
        }
    }
}

/* NK (1 or 2) tap columns from kw at flat offset t0 for one sample and one input channel (x0:
 * its first row's pixel t0 / F), added into dw[kh * KW + kw] (vectors): the sums over the Ho
 * rows of E[i + kh][t0 + kw * F] * dy[i], lanes outside `fresh` dropped (the moved-back last
 * vector; each lane sums on its own, so they are dropped once, from the sums). The KH expanded
 * vectors in use per column form a ring (row r in slot r % KH): one new vector per row, and with
 * the rows unrolled by KH every slot is a fixed register, so nothing is moved. Two columns give
 * the multiply-adds enough independent accumulators. */
static inline __attribute__((always_inline)) void CNX_NAME(cnx_expanded_wgrad_columns)(
    const int KH, const int NK, const CNX_T* x0, ptrdiff_t row_step, CNX_M index, ptrdiff_t C,
    ptrdiff_t KW, const CNX_T* dy, ptrdiff_t Ho, ptrdiff_t n, CNX_M fresh, ptrdiff_t kw,
    CNX_T* dw)
{
    CNX_V acc[2][CNX_MAX_K], ring[2][CNX_MAX_K];
    for (int k = 0; k < NK; k++)
        for (int kh = 0; kh < KH; kh++) {
            acc[k][kh] = (CNX_V){0};
            if (kh + 1 < KH)
                ring[k][kh] = CNX_EXPANDED(x0 + kh * row_step + (kw + k) * C, index);
        }
    for (ptrdiff_t i0 = 0; i0 < Ho; i0 += KH) {
#pragma GCC unroll 8
        for (int u = 0; u < KH; u++) {
            const ptrdiff_t i = i0 + u;
            if (i >= Ho)
                break;
            const CNX_V d = CNX_NAME(cnx_load)(dy + i * n);
            for (int k = 0; k < NK; k++) {
                ring[k][(u + KH - 1) % KH] =
                    CNX_EXPANDED(x0 + (i + KH - 1) * row_step + (kw + k) * C, index);
                for (int kh = 0; kh < KH; kh++)
                    acc[k][kh] += ring[k][(u + kh) % KH] * d;
            }
        }
    }
    for (int k = 0; k < NK; k++)
        for (int kh = 0; kh < KH; kh++) {
            CNX_T* dst = dw + (kh * KW + kw + k) * CNX_L;
            const CNX_V kept = (CNX_V)(fresh & (CNX_M)acc[k][kh]);
            CNX_NAME(cnx_store)(dst, CNX_NAME(cnx_load)(dst) + kept, CNX_L);
        }
}

/* One sample's weight and bias gradients added into dwacc[p][c][kh][kw] and dbacc[p] (vectors of
 * L lanes by residue p) from its zero-bordered input x (as for cnx_expanded_conv) and dy (Ho rows
 * of Wo * F values). Needs Wo * F >= L and KH <= CNX_MAX_K. */
static void CNX_NAME(cnx_expanded_weight_grad)(const CNX_T* x, ptrdiff_t row_step, ptrdiff_t C,
                                               ptrdiff_t KH, ptrdiff_t KW, ptrdiff_t F,
                                               const CNX_T* dy, ptrdiff_t Ho, ptrdiff_t Wo,
                                               CNX_T* dwacc, CNX_T* dbacc)
{
    const ptrdiff_t n = Wo * F;
    for (ptrdiff_t t = 0; t < n; t += CNX_L) {
        const ptrdiff_t t0 = t + CNX_L > n ? n - CNX_L : t, p = t0 % F;
        CNX_M fresh;
        for (ptrdiff_t l = 0; l < CNX_L; l++)
            fresh[l] = t0 + l >= t ? -1 : 0;
        const CNX_M index = CNX_NAME(cnx_expand_index)(p, F, C);
        CNX_V part[4] = {{0}, {0}, {0}, {0}}; /* bias: four rows at a time, then the rest */
        ptrdiff_t i = 0;
        for (; i + 4 <= Ho; i += 4)
            for (int u = 0; u < 4; u++)
                part[u] += CNX_NAME(cnx_load)(dy + t0 + (i + u) * n);
        for (; i < Ho; i++)
            part[0] += CNX_NAME(cnx_load)(dy + t0 + i * n);
        const CNX_V sum = (CNX_V)(fresh & (CNX_M)((part[0] + part[1]) + (part[2] + part[3])));
        for (ptrdiff_t c = 0; c < C; c++) {
            const CNX_T* x0 = x + (t0 / F) * C + c;
            CNX_T* dw = dwacc + (p * C + c) * KH * KW * CNX_L;
            for (ptrdiff_t kw = 0; kw < KW; kw += 2) {
#define CNX_EXPANDED_CASE(k)                                                                  \
    case k:                                                                                   \
        if (kw + 1 < KW)                                                                      \
            CNX_NAME(cnx_expanded_wgrad_columns)(k, 2, x0, row_step, index, C, KW, dy + t0,   \
                                                 Ho, n, fresh, kw, dw);                       \
        else                                                                                  \
            CNX_NAME(cnx_expanded_wgrad_columns)(k, 1, x0, row_step, index, C, KW, dy + t0,   \
                                                 Ho, n, fresh, kw, dw);                       \
        break;
                CNX_SWITCH_K(KH, CNX_EXPANDED_CASE)
#undef CNX_EXPANDED_CASE
            }
        }
        CNX_NAME(cnx_store)(dbacc + p * CNX_L, CNX_NAME(cnx_load)(dbacc + p * CNX_L) + sum, CNX_L);
    }
}

#undef CNX_EXPANDED
#endif

/* Input gradient sliding down the rows (vertical stride and dilation 1): output-gradient row oh
 * reaches padded input row oh + kh through kernel row kh, so a block of output-gradient rows
 * feeds the input rows below it, each broadcast dy value multiplying all KH kernel rows' weights
 * held in registers. Per output channel that is KH * nv weight loads and R broadcasts for
 * R * KH * nv multiply-adds, where cnx_input_grad_rows loads a dy value per nv of them.
 * Rows per block, at most: what the register file holds beside the KH * nv weights, one
 * broadcast, two spare registers and the (R + KH - 1) * nv accumulators (32 vector registers
 * with AVX-512, else 16), up to CNX_SLIDE_MAX_R (measured: 5 rows for 5x5 kernels with AVX-512
 * run as fast as 6 and faster than 4). */
#define CNX_SLIDE_MAX_R 12
#define CNX_SLIDE_FIT(KH, NV) ((CNX_NREGS - 3 - (NV) * (2 * (KH) - 1)) / (NV))
#define CNX_SLIDE_R(KH, NV)                                                                \
    (CNX_SLIDE_FIT(KH, NV) < 1 ? 1                                                         \
     : CNX_SLIDE_FIT(KH, NV) < CNX_SLIDE_MAX_R ? CNX_SLIDE_FIT(KH, NV) : CNX_SLIDE_MAX_R)
/* The tallest kernel the sliding input gradient takes: blocks of at least 4 rows for one span
 * vector (7 with AVX-512, 5 with 16 vector registers). */
#define CNX_SLIDE_KH \
    ((CNX_NREGS - 6) / 2 < CNX_MAX_K ? (CNX_NREGS - 6) / 2 : CNX_MAX_K)

/* One block of cnx_input_grad_slide: nr <= R output-gradient rows from dy (rows dy_row apart)
 * into the R + KH - 1 rows from dx (pitch apart), nv span vectors from wt's and dx's first
 * element (KH, nv and R constants once inlined); only the lanes set in `keep` of the last vector
 * are added. */
static inline __attribute__((always_inline)) void CNX_NAME(cnx_slide_block)(
    const int KH, const int nv, const int R, const CNX_T* dy, ptrdiff_t dy_row, ptrdiff_t nr,
    ptrdiff_t Wo, ptrdiff_t F, const CNX_T* wt, ptrdiff_t Sp, ptrdiff_t pix, CNX_T* dx,
    ptrdiff_t pitch, CNX_M keep)
{
    for (ptrdiff_t ow = 0; ow < Wo; ow++) {
        /* every loop over registers is unrolled whatever its size, so that acc stays there */
        CNX_V acc[CNX_SLIDE_MAX_R + CNX_MAX_K - 1][2];
#pragma GCC unroll 32
        for (int i = 0; i < (R + KH - 1) * nv; i++)
            acc[i / nv][i % nv] = (CNX_V){0};
        const CNX_T* d = dy + ow * F;
        for (ptrdiff_t f = 0; f < F; f++) {
            CNX_V wv[CNX_MAX_K][2];
#pragma GCC unroll 16
            for (int i = 0; i < KH * nv; i++)
                wv[i / nv][i % nv] = CNX_NAME(cnx_load)(wt + ((i / nv) * F + f) * Sp
                                                        + (i % nv) * CNX_L);
#pragma GCC unroll 16
            for (int r = 0; r < R; r++) {
                if (r < nr) {
                    const CNX_T a = d[r * dy_row + f];
#pragma GCC unroll 16
                    for (int i = 0; i < KH * nv; i++)
                        acc[r + i / nv][i % nv] += a * wv[i / nv][i % nv];
                }
            }
        }
#pragma GCC unroll 32
        for (int i = 0; i < R + KH - 1; i++) {
            if (i < nr + KH - 1) {
                CNX_T* dst = dx + i * pitch + ow * pix;
                acc[i][nv - 1] = CNX_NAME(cnx_blend)(keep, acc[i][nv - 1], (CNX_V){0});
                for (int v = 0; v < nv; v++)
                    CNX_NAME(cnx_store)(dst + v * CNX_L,
                                        CNX_NAME(cnx_load)(dst + v * CNX_L) + acc[i][v], CNX_L);
            }
        }
    }
}

/* cnx_input_grad_slide over all Ho rows for nv span vectors (KH, nv constants once inlined):
 * blocks of equal size, at most CNX_SLIDE_R(KH, nv) rows. */
static inline __attribute__((always_inline)) void CNX_NAME(cnx_slide_rows)(
    const int KH, const int nv, const CNX_T* dy, ptrdiff_t dy_row, ptrdiff_t Ho, ptrdiff_t Wo,
    ptrdiff_t F, const CNX_T* wt, ptrdiff_t Sp, ptrdiff_t pix, CNX_T* dx, ptrdiff_t pitch,
    CNX_M keep)
{
    const int R = CNX_SLIDE_R(KH, nv);
    const ptrdiff_t blocks = (Ho + R - 1) / R, rows = (Ho + blocks - 1) / blocks;
    for (ptrdiff_t oh = 0; oh < Ho; oh += rows)
        CNX_NAME(cnx_slide_block)(KH, nv, R, dy + oh * dy_row, dy_row,
                                  Ho - oh < rows ? Ho - oh : rows, Wo, F, wt, Sp, pix,
                                  dx + oh * pitch, pitch, keep);
}

/* Input gradient of one sample at vertical stride and dilation 1, KH <= CNX_SLIDE_KH:
 * dx[(oh + kh) * pitch + ow * pix + s] += sum_f dy[oh * dy_row + ow * F + f] * wt[kh, f, s]
 * for every output-gradient row oh < Ho and pixel ow < Wo, kernel row kh and s in [0, span),
 * where s runs over one kernel row's span of input cells and channels. wt: (KH, F, Sp), Sp >=
 * span a multiple of L; dx: the padded input gradient, Ho + KH - 1 rows of at least
 * (Wo - 1) * pix + Sp elements (zeros are added past the span, also for a NaN or infinite dy).
 * The span goes two vectors at a time where two fit the registers with enough rows, else one. */
static void CNX_NAME(cnx_input_grad_slide)(const CNX_T* dy, ptrdiff_t dy_row, ptrdiff_t Ho,
                                           ptrdiff_t Wo, ptrdiff_t F, const CNX_T* wt,
                                           ptrdiff_t KH, ptrdiff_t Sp, ptrdiff_t span,
                                           ptrdiff_t pix, CNX_T* dx, ptrdiff_t pitch)
{
    /* lanes of a full vector, and of the span's last vector */
    const CNX_M all = CNX_NAME(cnx_span_lanes)(Sp, Sp), last = CNX_NAME(cnx_span_lanes)(Sp, span);
    for (ptrdiff_t s0 = 0; s0 < Sp;) {
#define CNX_SLIDE_CASE(k)                                                                     \
    case k:                                                                                   \
        if (CNX_SLIDE_R(k, 2) >= 4 && s0 + 2 * CNX_L <= Sp) {                                 \
            CNX_NAME(cnx_slide_rows)(k, 2, dy, dy_row, Ho, Wo, F, wt + s0, Sp, pix, dx + s0,  \
                                     pitch, s0 + 2 * CNX_L == Sp ? last : all);               \
            s0 += 2 * CNX_L;                                                                  \
        } else {                                                                              \
            CNX_NAME(cnx_slide_rows)(k, 1, dy, dy_row, Ho, Wo, F, wt + s0, Sp, pix, dx + s0,  \
                                     pitch, s0 + CNX_L == Sp ? last : all);                   \
            s0 += CNX_L;                                                                      \
        }                                                                                     \
        break;
        CNX_SWITCH_K(KH, CNX_SLIDE_CASE)
#undef CNX_SLIDE_CASE
    }
}

enum { CNX_NAME(cnx_slide_kh) = CNX_SLIDE_KH }; /* for the table */

#undef CNX_SLIDE_KH
#undef CNX_SLIDE_MAX_R
#undef CNX_SLIDE_FIT
#undef CNX_SLIDE_R

#undef CNX_ROWS
#undef CNX_MAX_K
#undef CNX_SWITCH_K
#undef CNX_NREGS

/* Sum of the lanes of v, in lane order (deterministic). */
static inline CNX_T CNX_NAME(cnx_hsum)(CNX_V v)
{
    CNX_T lanes[CNX_VBYTES / sizeof(CNX_T)];
    CNX_T sum = 0;
    memcpy(lanes, &v, sizeof v);
    for (int i = 0; i < CNX_L; i++)
        sum += lanes[i];
    return sum;
}

/* Bias gradient: db[f] += sum over npix pixels of dy[p * F + f], added in pixel order (vectors
 * of channels, the rest one by one). */
static void CNX_NAME(cnx_channel_sums)(const CNX_T* dy, ptrdiff_t npix, ptrdiff_t F, CNX_T* db)
{
    ptrdiff_t f0 = 0;
    for (; f0 + CNX_L <= F; f0 += CNX_L) {
        CNX_V acc = CNX_NAME(cnx_load)(db + f0);
        for (ptrdiff_t p = 0; p < npix; p++)
            acc += CNX_NAME(cnx_load)(dy + p * F + f0);
        CNX_NAME(cnx_store)(db + f0, acc, CNX_L);
    }
    for (; f0 < F; f0++)
        for (ptrdiff_t p = 0; p < npix; p++)
            db[f0] += dy[p * F + f0];
}

/* Planar weight gradient: taps per block (CNX_WTB) and output channels per block (CNX_WFB). Each
 * vector of input pixels loaded feeds CNX_WFB multiply-adds and each output-gradient vector
 * CNX_WTB, so the loop is bound by multiply-adds, not loads; accumulators + loaded vectors fit
 * the register file (AVX-512: 16 + 5 of 32; AVX2/SSE: 8 + 5 of 16). */
#define CNX_WTB (CNX_RB / 3)
#define CNX_WFB 4

/* One block of the planar weight gradient: nfb (<= CNX_WFB, a constant once inlined) output
 * channels with gradient planes at dy + f * nq and gradient rows dw + f * ntaps * Cin. */
static inline __attribute__((always_inline)) void CNX_NAME(cnx_planar_wgrad_block)(
    const int nfb, const CNX_T* in, ptrdiff_t plane, ptrdiff_t Cin, const ptrdiff_t* qoff,
    ptrdiff_t ntaps, const CNX_T* dy, ptrdiff_t nq, CNX_T* dw)
{
    for (ptrdiff_t c = 0; c < Cin; c++) {
        for (ptrdiff_t t0 = 0; t0 < ntaps; t0 += CNX_WTB) {
            const CNX_T* src[CNX_WTB];
            for (int r = 0; r < CNX_WTB; r++)
                src[r] = in + c * plane + qoff[t0 + r];
            CNX_V acc[CNX_WTB][CNX_WFB];
            for (int r = 0; r < CNX_WTB; r++)
                for (int f = 0; f < nfb; f++)
                    acc[r][f] = (CNX_V){0};
            for (ptrdiff_t q = 0; q < nq; q += CNX_L) {
                CNX_V d[CNX_WFB];
                for (int f = 0; f < nfb; f++)
                    d[f] = CNX_NAME(cnx_load)(dy + f * nq + q);
                for (int r = 0; r < CNX_WTB; r++) {
                    const CNX_V x = CNX_NAME(cnx_load)(src[r] + q);
                    for (int f = 0; f < nfb; f++)
                        acc[r][f] += x * d[f];
                }
            }
            const ptrdiff_t nr = ntaps - t0 < CNX_WTB ? ntaps - t0 : CNX_WTB;
            for (ptrdiff_t r = 0; r < nr; r++)
                for (int f = 0; f < nfb; f++)
                    dw[(f * ntaps + t0 + r) * Cin + c] += CNX_NAME(cnx_hsum)(acc[r][f]);
        }
    }
}

/* Weight gradient of one sample over channel planes (stride 1), for nf output channels:
 * dw[(f * ntaps + t) * Cin + c] += sum_q in[c * plane + q + qoff[t]] * dy[f * nq + q] and
 * db[f] += sum_q dy[f * nq + q], for q in [0, nq) with nq a multiple of L (dy is zero at the
 * dropped columns). qoff has a multiple of CNX_RB entries, the first ntaps real. */
static void CNX_NAME(cnx_planar_weight_grad)(const CNX_T* in, ptrdiff_t plane, ptrdiff_t Cin,
                                             const ptrdiff_t* qoff, ptrdiff_t ntaps,
                                             const CNX_T* dy, ptrdiff_t nq, ptrdiff_t nf,
                                             CNX_T* dw, CNX_T* db)
{
    for (ptrdiff_t f0 = 0; f0 < nf; f0 += CNX_WFB) {
        const CNX_T* dyf = dy + f0 * nq;
        CNX_T* dwf = dw + f0 * ntaps * Cin;
        switch (nf - f0 < CNX_WFB ? nf - f0 : CNX_WFB) {
        case 1: CNX_NAME(cnx_planar_wgrad_block)(1, in, plane, Cin, qoff, ntaps, dyf, nq, dwf); break;
        case 2: CNX_NAME(cnx_planar_wgrad_block)(2, in, plane, Cin, qoff, ntaps, dyf, nq, dwf); break;
        case 3: CNX_NAME(cnx_planar_wgrad_block)(3, in, plane, Cin, qoff, ntaps, dyf, nq, dwf); break;
        default: CNX_NAME(cnx_planar_wgrad_block)(4, in, plane, Cin, qoff, ntaps, dyf, nq, dwf);
        }
    }
    for (ptrdiff_t f = 0; f < nf; f++) {
        CNX_V sum = (CNX_V){0};
        for (ptrdiff_t q = 0; q < nq; q += CNX_L)
            sum += CNX_NAME(cnx_load)(dy + f * nq + q);
        db[f] += CNX_NAME(cnx_hsum)(sum);
    }
}

#undef CNX_WTB
#undef CNX_WFB

static const CNX_CAT2(cnx_table, CNX_S) CNX_NAME(cnx_table) = {
    CNX_NAME(cnx_direct_rows),    CNX_NAME(cnx_weight_grad),
    CNX_NAME(cnx_span_weight_grad), CNX_NAME(cnx_channel_sums), CNX_NAME(cnx_input_grad_rows),
    CNX_NAME(cnx_input_grad_slide),
    CNX_NAME(cnx_planar_conv),
    CNX_NAME(cnx_planar_weight_grad),
#if CNX_VBYTES == 64
    CNX_NAME(cnx_expanded_conv), CNX_NAME(cnx_expanded_weight_grad),
#else
    NULL, NULL,
#endif
    (int)(CNX_VBYTES / sizeof(CNX_T)), CNX_VBYTES, CNX_RB, CNX_QB, CNX_NAME(cnx_block_items),
    CNX_NAME(cnx_slide_kh),
};

#undef CNX_BLOCK_CASE
#undef CNX_BLOCK_CASES_1
#undef CNX_BLOCK_CASES_2
