"""CLI error paths not covered by tests/test_cli.py: each exits non-zero with exactly one
``cnnext: error: ...`` line naming the problem, and never a traceback."""
from __future__ import annotations

import builtins
import contextlib
import io
import os

import numpy as np
import pytest

from cnnext import layers as L
from cnnext.cli import main
from cnnext.models import Sequential


def run(*argv: str) -> tuple[int, str]:
    """``(exit status, stderr)`` of ``main(argv)``."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, err.getvalue()


def assert_one_error_line(result: tuple[int, str], *fragments: str, status: int = 1) -> None:
    code, err = result
    assert code == status, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("cnnext: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> str:
    """A small saved classifier for 28x28x1 images."""
    model = Sequential([L.Flatten(input_shape=(28, 28, 1)), L.Dense(10, activation="softmax")],
                       seed=0)
    model.compile("sgd", "sparse_categorical_crossentropy")
    path = tmp_path_factory.mktemp("cli-model") / "model.npz"
    model.save(path)
    return str(path)


def test_unreadable_model_file(model_file, monkeypatch):
    """Permission denied (simulated: the tests may run as root, who can read anything)."""
    real_open = builtins.open

    def deny(file, *args, **kwargs):
        if os.fspath(file) == model_file:
            raise PermissionError(13, "Permission denied", model_file)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", deny)
    assert_one_error_line(run("summary", model_file), model_file, "Permission denied")


def test_directory_given_as_model(tmp_path):
    assert_one_error_line(run("summary", str(tmp_path)), str(tmp_path), "Is a directory")


@pytest.mark.parametrize("content", [b"", b"garbage, not an array", None],
                         ids=["empty", "garbage", "pickled-objects"])
def test_unreadable_npy_images(model_file, tmp_path, content):
    """Empty, garbage and pickle-carrying .npy files are refused (nothing is unpickled)."""
    path = tmp_path / "image.npy"
    marker = tmp_path / "pwned"
    if content is None:
        payload = np.empty((28, 28), dtype=object)
        payload[0, 0] = _Payload(marker)
        np.save(path, payload, allow_pickle=True)
    else:
        path.write_bytes(content)
    assert_one_error_line(run("predict", model_file, str(path)), str(path))
    assert not marker.exists()


class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def test_empty_png_image(model_file, tmp_path):
    if os.environ.get("CI") != "true":  # CI installs Pillow: a missing one must fail there
        pytest.importorskip("PIL")
    path = tmp_path / "image.png"
    path.write_bytes(b"")
    assert_one_error_line(run("predict", model_file, str(path)), "image.png")


@pytest.mark.parametrize("value", ["0", "-2", "1.5", "", "many", str(10**20)])
def test_bad_thread_counts(model_file, value):
    """Not a positive int: a usage error (2); above the kernels' limit: a plain error (1)."""
    result = run("predict", "--threads", value, model_file, "x.npy")
    assert_one_error_line(result, "thread", status=1 if value == str(10**20) else 2)


@pytest.mark.parametrize("argv", [["--backend"], ["--backend", ""], ["--backend", "Cython"],
                                  ["--backend", "torch"]])
def test_bad_backend_values(model_file, argv):
    assert_one_error_line(run("predict", *argv, model_file, "x.npy"), "--backend", status=2)


def test_train_output_that_is_a_directory_fails_before_training(tmp_path):
    target = tmp_path / "out.npz"
    target.mkdir()
    code, err = run("train", "--limit", "100", "--epochs", "1", "--output", str(target))
    assert_one_error_line((code, err), str(target), "it is a directory")
    assert "Epoch" not in err  # refused before any training
