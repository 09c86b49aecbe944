"""While a model runs on the compiled backend with several kernel threads, numpy's BLAS (used by
the GEMM path of large convolutions without AVX-512) is held to one thread, so the two thread
pools never busy-wait against each other; the user's BLAS setting is restored afterwards, also
across Python threads and on errors. The convolutions then take their direct kernels, on every
thread."""
from __future__ import annotations

import threading

import numpy as np
import pytest

import cnnext
from cnnext._config import _blas_controllers, single_threaded_blas
from cnnext.layers import Conv2D, Dense, Flatten


def blas_threads() -> list[int]:
    return [lib.get_num_threads() for lib in _blas_controllers()]


@pytest.fixture
def two_blas_threads():
    """BLAS and kernels on 2 threads (so the policy has something to change); restored after."""
    if not _blas_controllers():
        pytest.fail("threadpoolctl finds no BLAS library behind numpy")
    cnnext.set_num_threads(2)
    yield
    cnnext.set_num_threads(None)


def recording_model(backend: str, seen: list[list[int]]) -> cnnext.Sequential:
    """A small conv net whose Dense layer records BLAS's thread counts on every forward call."""
    dense = Dense(3, activation="softmax")
    original = dense.affine_forward

    def affine_forward(x, training=False):
        seen.append(blas_threads())
        return original(x, training)

    dense.affine_forward = affine_forward
    model = cnnext.Sequential([Conv2D(2, 3, activation="relu", input_shape=(6, 6, 1)), Flatten(),
                               dense], seed=0, backend=backend)
    model.compile("sgd", "sparse_categorical_crossentropy")
    return model


def test_compiled_model_runs_blas_on_one_thread_and_restores_it(compiled_backend,
                                                                two_blas_threads):
    before = blas_threads()
    assert set(before) == {2}
    seen: list[list[int]] = []
    model = recording_model(compiled_backend, seen)
    x = np.random.default_rng(0).standard_normal((8, 6, 6, 1)).astype(np.float32)
    model.fit(x, np.arange(8) % 3, epochs=1, batch_size=4, verbose=0)
    model.predict(x)
    assert seen and all(set(counts) == {1} for counts in seen)
    assert blas_threads() == before


def test_numpy_backend_keeps_blas_threads(two_blas_threads):
    seen: list[list[int]] = []
    model = recording_model("numpy", seen)
    model.predict(np.zeros((2, 6, 6, 1), dtype=np.float32))
    assert seen == [[2] * len(_blas_controllers())]


def test_single_threaded_blas_nests_and_restores_on_errors(two_blas_threads):
    with single_threaded_blas():
        with pytest.raises(RuntimeError):
            with single_threaded_blas():
                raise RuntimeError("boom")
        assert set(blas_threads()) == {1}  # the outer block still holds it
    assert set(blas_threads()) == {2}


def test_overlapping_python_threads_restore_the_setting(two_blas_threads):
    """Blocks entered and left by several Python threads in any interleaving leave BLAS as it was
    (the last one out restores it)."""
    inside = threading.Barrier(4)

    def hold():
        with single_threaded_blas():
            inside.wait()

    workers = [threading.Thread(target=hold) for _ in range(3)]
    for worker in workers:
        worker.start()
    inside.wait()
    for worker in workers:
        worker.join()
    assert set(blas_threads()) == {2}


def test_large_convolutions_keep_every_thread_while_blas_is_held(compiled_backend, monkeypatch):
    """Without AVX-512 a 64-channel convolution goes through im2col and BLAS; held to one BLAS
    thread in a model it ran on one thread in all (half the speed of the direct kernels on
    two). Now it takes the direct kernels there, unless its weights exceed 512 KiB per thread."""
    from cnnext import ops
    from cnnext._ext import _conv2d

    calls: list[str] = []
    for name in ("_forward_gemm", "_forward_direct"):
        real = getattr(_conv2d, name)
        monkeypatch.setattr(_conv2d, name,
                            lambda *args, real=real, name=name: calls.append(name) or real(*args))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 6, 6, 64)).astype(np.float32)
    small = rng.standard_normal((3, 3, 64, 64)).astype(np.float32)  # 147 KiB
    large = rng.standard_normal((3, 3, 64, 512)).astype(np.float32)  # 1.2 MiB
    _conv2d.set_simd_level("baseline")  # 16-byte vectors: the GEMM path applies
    try:
        cnnext.set_num_threads(2)
        expected = ops.conv2d(x, small, backend="numpy")
        np.testing.assert_allclose(ops.conv2d(x, small), expected, rtol=1e-4, atol=1e-4)
        with single_threaded_blas():
            np.testing.assert_allclose(ops.conv2d(x, small), expected, rtol=1e-4, atol=1e-4)
            ops.conv2d(x, large)
            cnnext.set_num_threads(1)
            ops.conv2d(x, small)
        cnnext.set_num_threads(2)
        inside, release = threading.Event(), threading.Event()

        def model_pass_elsewhere() -> None:
            with single_threaded_blas():
                inside.set()
                release.wait(30)

        other = threading.Thread(target=model_pass_elsewhere)
        other.start()
        inside.wait(30)
        ops.conv2d(x, small)  # another thread's model pass does not change this call's path
        release.set()
        other.join()
    finally:
        _conv2d.set_simd_level("auto")
    assert calls == ["_forward_gemm", "_forward_direct", "_forward_gemm", "_forward_gemm",
                     "_forward_gemm"]
