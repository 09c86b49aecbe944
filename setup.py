"""Build the compiled kernels: every ``src/*.pyx`` becomes ``cnnext._ext.<name>``.

Environment variables (all optional):
  CNNEXT_NATIVE=1          add ``-march=native`` (local builds only; never for a distributed wheel)
  CNNEXT_SANITIZE=address  build with AddressSanitizer (debug/fuzzing builds)
  CNNEXT_NO_OPENMP=1       build without OpenMP even when the compiler supports it
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import warnings
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).parent
OPENMP_FLAGS = ["-fopenmp"]
OPENMP_PROBE = textwrap.dedent(
    """
    #include <omp.h>
    int main(void) {
        int n = 0;
        #pragma omp parallel reduction(+:n)
        n += 1;
        return n > 0 ? 0 : 1;
    }
    """
)


def compiler_has_openmp(compiler) -> bool:
    """Compile, link and run a tiny OpenMP program with the build's own compiler."""
    if os.environ.get("CNNEXT_NO_OPENMP") == "1":
        return False
    tmp = tempfile.mkdtemp(prefix="cnnext-omp-")
    try:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(OPENMP_PROBE)
        objs = compiler.compile([src], output_dir=tmp, extra_postargs=OPENMP_FLAGS)
        exe = os.path.join(tmp, "probe")
        compiler.link_executable(objs, exe, extra_postargs=OPENMP_FLAGS)
        subprocess.run([exe], check=True, capture_output=True)
        return True
    except Exception:  # any failure means "no usable OpenMP"
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class BuildExt(build_ext):
    """Adds OpenMP flags when the compiler supports them, else warns and builds serially."""

    def build_extensions(self) -> None:
        openmp = compiler_has_openmp(self.compiler)
        if not openmp:
            warnings.warn(
                "cnnext: the C compiler does not support OpenMP (-fopenmp); "
                "building the kernels SERIALLY (single-threaded).",
                stacklevel=1,
            )
            print("WARNING: cnnext is being built without OpenMP", file=sys.stderr)
        extra_compile, extra_link = ["-O3"], []
        if openmp:
            extra_compile += OPENMP_FLAGS
            extra_link += OPENMP_FLAGS
        if os.environ.get("CNNEXT_NATIVE") == "1":
            extra_compile.append("-march=native")
        sanitize = os.environ.get("CNNEXT_SANITIZE")
        if sanitize:
            flags = [f"-fsanitize={sanitize}", "-fno-omit-frame-pointer", "-g"]
            extra_compile += flags
            extra_link += flags
        for ext in self.extensions:
            ext.extra_compile_args = extra_compile + list(ext.extra_compile_args or [])
            ext.extra_link_args = extra_link + list(ext.extra_link_args or [])
            ext.define_macros = list(ext.define_macros or []) + [
                ("CNNEXT_OPENMP", "1" if openmp else "0")
            ]
        super().build_extensions()


def extensions() -> list[Extension]:
    exts = [
        Extension(f"cnnext._ext.{pyx.stem}", [str(pyx.relative_to(HERE))])
        for pyx in sorted((HERE / "src").glob("*.pyx"))
    ]
    return cythonize(
        exts,
        include_path=["src"],
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    )


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExt})
