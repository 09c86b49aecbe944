"""What the compiled build knows about OpenMP (used by ``cnnext.show_config``)."""
from _openmp cimport CNNEXT_HAS_OPENMP, omp_get_max_threads, omp_get_num_procs


def openmp_enabled() -> bool:
    """True when the kernels were compiled with OpenMP."""
    return bool(CNNEXT_HAS_OPENMP)


def omp_max_threads() -> int:
    """The OpenMP runtime's default team size (honours OMP_NUM_THREADS); 1 without OpenMP."""
    return omp_get_max_threads()


def omp_num_procs() -> int:
    """Processors the OpenMP runtime sees; 1 without OpenMP."""
    return omp_get_num_procs()
