/* The machine's float32 multiply-add peak: every thread runs 12 independent chains of AVX-512
 * multiply-adds on registers only (no loads, no stores), so nothing but the FMA units limits it.
 * This is the ceiling for the direct convolution kernels, which numpy's GEMM (the benchmark's
 * "GEMM ceiling") may not reach: OpenBLAS runs AVX2 kernels on some AVX-512 CPUs.
 *
 *     gcc -O2 -mavx512f -mfma -fopenmp benchmarks/fma_peak.c -o /tmp/fma_peak
 *     OMP_NUM_THREADS=2 /tmp/fma_peak
 *
 * Prints GFLOP/s (2 per lane per multiply-add) for 5 runs of about 0.1-0.2 s each.
 */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>

#define CHAINS 12                /* enough to cover the latency of two FMA pipes */
#define STEPS (100000000 / CHAINS) /* multiply-add steps per chain and thread */

int main(void)
{
    for (int run = 0; run < 5; run++) {
        float sink = 0;
        const double start = omp_get_wtime();
#pragma omp parallel reduction(+ : sink)
        {
            const __m512 b = _mm512_set1_ps(1.0000001f), c = _mm512_set1_ps(1e-7f);
            __m512 acc[CHAINS];
            for (int i = 0; i < CHAINS; i++)
                acc[i] = _mm512_set1_ps((float)i);
            for (long step = 0; step < STEPS; step++) {
#pragma GCC unroll 12
                for (int i = 0; i < CHAINS; i++)
                    acc[i] = _mm512_fmadd_ps(acc[i], b, c);
            }
            __m512 sum = acc[0];
            for (int i = 1; i < CHAINS; i++)
                sum = _mm512_add_ps(sum, acc[i]);
            sink += _mm512_reduce_add_ps(sum); /* keeps the chains alive */
        }
        const double seconds = omp_get_wtime() - start;
        const double flop = 2.0 * 16 * CHAINS * (double)STEPS * omp_get_max_threads();
        printf("%.1f GFLOP/s on %d threads (checksum %g)\n", flop / seconds / 1e9,
               omp_get_max_threads(), sink);
    }
    return 0;
}
