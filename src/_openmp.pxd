# OpenMP shim: kernels may call these unconditionally; without OpenMP they report one thread.
cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define CNNEXT_HAS_OPENMP 1
    #else
    static int omp_get_max_threads(void) { return 1; }
    static int omp_get_thread_num(void) { return 0; }
    static int omp_get_num_procs(void) { return 1; }
    #define CNNEXT_HAS_OPENMP 0
    #endif
    """
    int CNNEXT_HAS_OPENMP
    int omp_get_max_threads() nogil
    int omp_get_thread_num() nogil
    int omp_get_num_procs() nogil
