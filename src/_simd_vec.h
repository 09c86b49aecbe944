/* The vector types and memory helpers of one element type and instruction set (no include
 * guard): CNX_V holds CNX_L values of CNX_T, CNX_M as many CNX_I (comparison masks: all bits
 * set or clear per lane). */
typedef CNX_T CNX_NAME(cnx_vec) __attribute__((vector_size(CNX_VBYTES)));
typedef CNX_I CNX_NAME(cnx_mask) __attribute__((vector_size(CNX_VBYTES)));
#define CNX_V CNX_NAME(cnx_vec)
#define CNX_M CNX_NAME(cnx_mask)
#define CNX_L ((ptrdiff_t)(CNX_VBYTES / sizeof(CNX_T)))

static inline CNX_V CNX_NAME(cnx_load)(const CNX_T* p)
{
    CNX_V v;
    memcpy(&v, p, sizeof v); /* unaligned load */
    return v;
}

/* The first `n` lanes from `p`, the others zero. */
static inline CNX_V CNX_NAME(cnx_load_part)(const CNX_T* p, ptrdiff_t n)
{
    if (n >= CNX_L)
        return CNX_NAME(cnx_load)(p);
    CNX_T lanes[CNX_VBYTES / sizeof(CNX_T)] = {0};
    memcpy(lanes, p, (size_t)n * sizeof(CNX_T));
    return CNX_NAME(cnx_load)(lanes);
}

/* Store the first `n` lanes of `v` at `p`. */
static inline void CNX_NAME(cnx_store)(CNX_T* p, CNX_V v, ptrdiff_t n)
{
    if (n >= CNX_L) {
        memcpy(p, &v, sizeof v);
    } else {
        CNX_T lanes[CNX_VBYTES / sizeof(CNX_T)];
        memcpy(lanes, &v, sizeof v);
        memcpy(p, lanes, (size_t)n * sizeof(CNX_T));
    }
}

/* Per lane: `a` where `m` is set, else `b`. */
static inline CNX_V CNX_NAME(cnx_blend)(CNX_M m, CNX_V a, CNX_V b)
{
    return (CNX_V)((m & (CNX_M)a) | (~m & (CNX_M)b));
}
