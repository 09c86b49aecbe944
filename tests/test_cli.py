"""The command line end to end on the bundled Fashion-MNIST sample, and its error exits."""
from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import cnnext
from cnnext import datasets
from cnnext.cli import main
from cnnext.io import load_model
from cnnext.presets import prepare_images
from cnnext.preprocessing import to_float

SAMPLE = str(datasets.BUNDLED_FASHION_MNIST)


def run(*argv: str) -> tuple[int, str, str]:
    """``main(argv)`` with stdout and stderr captured: ``(exit status, stdout, stderr)``."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def assert_one_error_line(result: tuple[int, str, str], *fragments: str, status: int = 1) -> None:
    code, _, err = result
    assert code == status, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("cnnext: error: ")
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """LeNet-5 trained for two epochs on 300 images of the bundled sample."""
    directory = tmp_path_factory.mktemp("cli")
    model, curve = directory / "model.npz", directory / "curve.png"
    result = run("train", "--preset", "lenet5", "--epochs", "2", "--limit", "300",
                 "--batch-size", "20", "--data", SAMPLE, "--output", str(model),
                 "--curve", str(curve), "--seed", "3")
    return {"dir": directory, "model": model, "curve": curve, "result": result}


def test_train_prints_source_epochs_and_accuracy_and_saves(trained):
    code, out, err = trained["result"]
    assert code == 0, err
    assert f"data: Fashion-MNIST from {SAMPLE} (5000 training, 1000 test images)" in out
    for epoch in (1, 2):
        assert re.search(rf"^epoch {epoch}: train \d+\.\d s, test accuracy 0\.\d{{4}}$", out, re.M)
    assert "SGD lr 0.05 (cosine), batch 20, 2 epochs, 300 training / 300 test images" in out
    accuracy = float(re.search(r"^test accuracy: (0\.\d{4})$", out, re.M).group(1))
    assert accuracy > 0.2  # ten balanced classes: chance is 0.1
    assert trained["model"].is_file()
    assert trained["curve"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Epoch 2/2" in err and "Traceback" not in err
    model = load_model(trained["model"])
    assert [type(layer).__name__ for layer in model.layers][:2] == ["Conv2D", "MaxPool2D"]


def test_evaluate_reports_the_accuracy_of_the_saved_model(trained):
    code, out, err = run("evaluate", str(trained["model"]), "--data", SAMPLE)
    assert code == 0, err
    assert "test accuracy" in out and "(1000 images)" in out
    reported = float(re.search(r"test accuracy: (0\.\d{4})", out).group(1))
    (_, _), (xt, yt) = datasets.load_from(SAMPLE)
    model = load_model(trained["model"])
    expected = np.mean(model.predict(prepare_images(xt)).argmax(axis=1) == yt)
    assert reported == pytest.approx(expected, abs=1e-4)


def pil_image():
    """``PIL.Image``: skipped locally without Pillow, a failure under CI=true (CI installs it)."""
    if os.environ.get("CI") == "true":
        from PIL import Image
        return Image
    return pytest.importorskip("PIL.Image")


def test_predict_npy_and_png_agree_with_the_model(trained):
    pil = pil_image()
    (_, _), (xt, yt) = datasets.load_from(SAMPLE)
    npy, png, floats = trained["dir"] / "a.npy", trained["dir"] / "b.png", trained["dir"] / "c.npy"
    np.save(npy, xt[0, :, :, 0])
    pil.fromarray(xt[1, :, :, 0]).save(png)
    np.save(floats, to_float(xt[0]))  # (28, 28, 1) floats in [0, 1]
    code, out, err = run("predict", str(trained["model"]), str(npy), str(png), str(floats))
    assert code == 0, err
    probabilities = load_model(trained["model"]).predict(prepare_images(xt[:2]))
    lines = out.splitlines()
    assert len(lines) == 3
    for line, path, row in zip(lines, (npy, png, floats), (0, 1, 0)):
        k = int(probabilities[row].argmax())
        name = datasets.FASHION_MNIST_CLASSES[k]
        assert line == f"{path}: class {k} ({name}) probability {probabilities[row, k]:.4f}"


def test_summary_lists_the_layers(trained):
    code, out, _ = run("summary", str(trained["model"]))
    assert code == 0
    assert "Conv2D" in out and "Total params: 61,706" in out


def test_info_shows_the_configuration():
    code, out, _ = run("info")
    assert code == 0
    assert re.search(r"^num_threads\s+: \d+$", out, re.M)
    assert "default_backend" in out


def test_train_falls_back_to_the_bundled_sample(tmp_path, monkeypatch):
    monkeypatch.delenv(datasets.FASHION_MNIST_ENV, raising=False)
    monkeypatch.setattr(datasets, "SYSTEM_DIRS", {"fashion-mnist": tmp_path / "none"})
    code, out, err = run("train", "--preset", "seed-test1", "--epochs", "1", "--limit", "64",
                         "--output", str(tmp_path / "m.npz"), "--curve", str(tmp_path / "c.png"))
    assert code == 0, err
    assert "(bundled sample)" in out
    assert "Adam lr 0.001 (constant), batch 32, 1 epochs" in out


def test_train_without_matplotlib_skips_the_plot(tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code, out, err = run("train", "--preset", "seed-test1", "--epochs", "1", "--limit", "32",
                         "--data", SAMPLE, "--output", str(tmp_path / "m.npz"),
                         "--curve", str(tmp_path / "c.png"))
    assert code == 0, err
    assert "training curve skipped: matplotlib is not installed" in out
    assert not (tmp_path / "c.png").exists() and (tmp_path / "m.npz").is_file()


# ------------------------------------------------------------------------------------ errors
def test_missing_data_directory(tmp_path):
    missing = str(tmp_path / "no-such-dir")
    assert_one_error_line(run("train", "--data", missing, "--epochs", "1"), missing)


def test_evaluate_with_missing_data(trained, tmp_path):
    assert_one_error_line(run("evaluate", str(trained["model"]), "--data", str(tmp_path)),
                          "missing train-images-idx3-ubyte")


@pytest.mark.parametrize("command", ["evaluate", "summary", "predict"])
def test_corrupt_model_file(tmp_path, command):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 this is no model")
    extra = [str(tmp_path / "x.npy")] if command == "predict" else []
    np.save(tmp_path / "x.npy", np.zeros((28, 28), np.uint8))
    assert_one_error_line(run(command, str(bad), *extra), "bad.npz")


def test_truncated_model_file(trained, tmp_path):
    data = trained["model"].read_bytes()
    cut = tmp_path / "cut.npz"
    cut.write_bytes(data[: len(data) // 2])
    assert_one_error_line(run("summary", str(cut)), "cut.npz")


def test_missing_model_file(tmp_path):
    assert_one_error_line(run("summary", str(tmp_path / "nothing.npz")), "nothing.npz: no such model file")


@pytest.mark.parametrize("suffix", [".npy", ".png"])
def test_wrong_image_size(trained, tmp_path, suffix):
    path = tmp_path / f"big{suffix}"
    image = np.zeros((32, 32), np.uint8)
    if suffix == ".npy":
        np.save(path, image)
    else:
        pil_image().fromarray(image).save(path)
    assert_one_error_line(run("predict", str(trained["model"]), str(path)),
                          f"{path}: expected a 28x28 grayscale image, got shape (32, 32)")


@pytest.mark.parametrize("image, message", [
    (np.full((28, 28), 2.0), "floats in [0, 1]"),
    (np.zeros((28, 28), np.int64), "floats in [0, 1]"),
])
def test_wrong_image_values(trained, tmp_path, image, message):
    path = tmp_path / "v.npy"
    np.save(path, image)
    assert_one_error_line(run("predict", str(trained["model"]), str(path)), message)


def test_missing_and_unsupported_images(trained, tmp_path):
    assert_one_error_line(run("predict", str(trained["model"]), str(tmp_path / "gone.npy")), "gone.npy")
    (tmp_path / "x.jpg").write_bytes(b"jpeg")
    assert_one_error_line(run("predict", str(trained["model"]), str(tmp_path / "x.jpg")),
                          "unsupported image type '.jpg'")


@pytest.mark.parametrize("limit", [100, 500], ids=["over-twice-the-limit", "over-the-limit"])
def test_png_over_the_decompression_bomb_limit(trained, tmp_path, monkeypatch, limit):
    image_module = pil_image()
    path = tmp_path / "bomb.png"
    image_module.fromarray(np.zeros((28, 28), np.uint8)).save(path)
    monkeypatch.setattr(image_module, "MAX_IMAGE_PIXELS", limit)  # 784 pixels are too many
    assert_one_error_line(run("predict", str(trained["model"]), str(path)),
                          f"{path}: image too large to read")


def test_npz_archive_named_npy(trained, tmp_path):
    path = tmp_path / "archive.npy"
    with open(path, "wb") as f:
        np.savez(f, image=np.zeros((28, 28), np.uint8))
    assert_one_error_line(run("predict", str(trained["model"]), str(path)),
                          f"{path}: not a readable .npy image")


def test_unwritable_curve_fails_before_loading_the_data(tmp_path, monkeypatch):
    def load_fashion_mnist(path=None):
        raise AssertionError("the data set was loaded")

    monkeypatch.setattr(datasets, "load_fashion_mnist", load_fashion_mnist)
    curve = tmp_path / "nodir" / "c.png"
    assert_one_error_line(run("train", "--output", str(tmp_path / "m.npz"), "--curve", str(curve)),
                          f"cannot write {str(curve)!r}")


@pytest.mark.parametrize("argv, fragment", [
    (["train", "--preset", "resnet50"], "argument --preset: invalid choice: 'resnet50'"),
    (["train", "--optimizer", "lbfgs"], "argument --optimizer: invalid choice: 'lbfgs'"),
    (["train", "--seed", "-1"], "argument --seed: expected an integer >= 0, got '-1'"),
    (["train", "--epochs", "0"], "--epochs: expected a positive integer, got '0'"),
    (["train", "--lr", "-1"], "--lr: expected a positive number, got '-1'"),
    (["train", "--lr", "nan"], "--lr: expected a positive number"),
    (["train", "--threads", "two"], "--threads: expected a positive integer"),
    (["train", "--backend", "cuda"], "invalid choice: 'cuda'"),
    (["fly"], "invalid choice: 'fly'"),
    ([], "the following arguments are required: COMMAND"),
    (["predict", "model.npz"], "the following arguments are required: IMAGE"),
])
def test_bad_arguments_exit_with_status_2(argv, fragment):
    assert_one_error_line(run(*argv), fragment, status=2)


def test_keyboard_interrupt_exits_130(monkeypatch):
    def interrupted(path=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(datasets, "load_fashion_mnist", interrupted)
    assert_one_error_line(run("train"), "interrupted", status=130)


def test_module_entry_point_reports_errors_without_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(cnnext.__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-m", "cnnext", "summary", str(tmp_path / "m.npz")],
                          capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [f"cnnext: error: {tmp_path / 'm.npz'}: no such model file"]
    ok = subprocess.run([sys.executable, "-m", "cnnext", "info"], capture_output=True, text=True,
                        timeout=120, env=env, cwd=tmp_path)
    assert ok.returncode == 0 and "version" in ok.stdout
