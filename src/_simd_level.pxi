# Instruction-set selection of a module's vector kernels; included by the modules whose C header
# (see src/_simd.h) declares cnx_isa_name and cnx_select.
import os
import warnings


def simd_level() -> str:
    """Instruction set of this module's vector kernels: ``"avx512"``, ``"avx2"`` or
    ``"baseline"`` (the build's own target flags, SSE2 on x86-64)."""
    return cnx_isa_name.decode()


def set_simd_level(name: str = "auto") -> None:
    """Use the vector kernels compiled for ``name`` (``"auto"``: the widest this CPU runs).
    For tests and benchmarks; do not switch while another thread runs a kernel of this module."""
    if not cnx_select(name.encode()):
        raise ValueError(
            f"SIMD level {name!r} is not available on this CPU or build; "
            "expected 'auto', 'avx512', 'avx2' or 'baseline'"
        )


try:  # CNNEXT_SIMD overrides the automatic choice
    set_simd_level(os.environ.get("CNNEXT_SIMD", "").strip().lower() or "auto")
except ValueError as exc:
    warnings.warn(f"{exc}; using 'auto'", RuntimeWarning, stacklevel=1)
    set_simd_level("auto")
