"""Shared fixtures: backend parametrisation and restoring global cnnext settings after each test."""
from __future__ import annotations

import os

import numpy as np
import pytest

import cnnext
from cnnext import backend

IN_CI = os.environ.get("CI") == "true"


@pytest.fixture(params=backend.available_backends())
def backend_name(request) -> str:
    """Every backend this build provides ("numpy", plus "cython" when compiled)."""
    return request.param


@pytest.fixture
def compiled_backend() -> str:
    """The compiled backend's name; skips locally when it is not built, FAILS under CI=true."""
    if "cython" not in backend.available_backends():
        reason = (
            "compiled kernels are not built (import error: "
            f"{backend.COMPILED_IMPORT_ERROR}); run `python setup.py build_ext --inplace`"
        )
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    return "cython"


@pytest.fixture(autouse=True)
def _restore_cnnext_globals():
    """Tests may switch the default backend or the thread count; put both back afterwards."""
    default_backend, threads = cnnext.get_backend(), cnnext.get_num_threads()
    yield
    if cnnext.get_backend() != default_backend:
        cnnext.set_backend(default_backend)
    if cnnext.get_num_threads() != threads:
        cnnext.set_num_threads(threads)


def _numerical_grad(f, array: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences of the scalar ``f()`` w.r.t. every element of ``array`` (perturbed in
    place and restored)."""
    grad = np.zeros_like(array)
    flat, gflat = array.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        up = f()
        flat[i] = old - eps
        down = f()
        flat[i] = old
        gflat[i] = (up - down) / (2 * eps)
    return grad


@pytest.fixture
def numerical_grad():
    """``numerical_grad(f, array)``: central finite differences of ``f()`` w.r.t. ``array``."""
    return _numerical_grad
