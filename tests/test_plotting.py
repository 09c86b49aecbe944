"""PNG output of cnnext.plotting: files written atomically, valid images, clear errors."""
from __future__ import annotations

import builtins
import os
import sys

import numpy as np
import pytest

if os.environ.get("CI") != "true":  # CI installs the plot extra: a missing matplotlib must fail there
    pytest.importorskip("matplotlib")

from cnnext import layers as L  # noqa: E402
from cnnext import plotting  # noqa: E402
from cnnext.models import Sequential  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def trained():
    model = Sequential([L.Conv2D(6, 3, activation="relu", input_shape=(12, 12, 2)), L.MaxPool2D(2),
                        L.Conv2D(9, 3, padding="same"), L.Flatten(), L.Dense(3, activation="softmax")],
                       seed=0)
    model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 12, 12, 2)).astype(np.float32)
    history = model.fit(x, rng.integers(0, 3, 20), epochs=3, batch_size=10, validation_split=0.25,
                        verbose=0)
    return model, history, x


def _image_size(path) -> tuple[int, int]:
    """(width, height) from the PNG's IHDR chunk, after checking the signature."""
    data = open(path, "rb").read()
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    assert data[-8:-4] == b"IEND"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _only_file(directory, name):
    assert sorted(os.listdir(directory)) == [name]  # no temp files left behind


def test_plot_history(tmp_path, trained):
    _, history, _ = trained
    path = tmp_path / "history.png"
    assert plotting.plot_history(history, path) == str(path)
    width, height = _image_size(path)
    assert width >= 600 and height >= 200  # two panels: loss and accuracy
    assert os.path.getsize(path) > 5000
    _only_file(tmp_path, "history.png")


def test_plot_history_accepts_a_dict(tmp_path):
    path = plotting.plot_history({"loss": [3.0, 2.0, 1.5]}, tmp_path / "h.png")
    assert _image_size(path)[0] > 300


@pytest.mark.parametrize("bad", [{}, [1.0, 2.0], None])
def test_plot_history_rejects_non_history(tmp_path, bad):
    with pytest.raises(ValueError, match="History"):
        plotting.plot_history(bad, tmp_path / "h.png")
    assert not os.listdir(tmp_path)


def test_plot_filters_per_channel_and_averaged(tmp_path, trained):
    model, _, _ = trained
    few = plotting.plot_filters(model, tmp_path / "first.png")  # 6 filters x 2 channels
    many = plotting.plot_filters(model, tmp_path / "second.png", layer=2)  # 9 filters x 6 channels
    layer_object = plotting.plot_filters(model.layers[0], tmp_path / "layer.png")
    (w_few, _), (w_many, _) = _image_size(few), _image_size(many)
    assert _image_size(layer_object) == _image_size(few)
    # 6 filters x 2 channels: 3 filters a row, 6 panels; 9 filters averaged: 3 panels a row
    assert w_few > w_many
    assert os.path.getsize(few) > 5000


def test_plot_filters_picks_layer_by_name(tmp_path, trained):
    model, _, _ = trained
    by_name = plotting.plot_filters(model, tmp_path / "a.png", layer=model.layers[2].name)
    by_index = plotting.plot_filters(model, tmp_path / "b.png", layer=2)
    assert open(by_name, "rb").read() == open(by_index, "rb").read()


def test_plot_filters_errors(tmp_path, trained):
    model, _, _ = trained
    with pytest.raises(ValueError, match="'dense' is a Dense, not a Conv2D layer"):
        plotting.plot_filters(model, tmp_path / "f.png", layer="dense")
    with pytest.raises(ValueError, match="expected a Conv2D layer or a model, got Dense"):
        plotting.plot_filters(model.layers[-1], tmp_path / "f.png")
    with pytest.raises(ValueError, match="has no Conv2D layer"):
        plotting.plot_filters(Sequential([L.Flatten(input_shape=(4, 4, 1)), L.Dense(2)]), tmp_path / "f.png")
    with pytest.raises(ValueError, match="not built"):
        plotting.plot_filters(L.Conv2D(2, 3), tmp_path / "f.png")
    with pytest.raises(ValueError, match="no layer named 'nope'"):
        plotting.plot_filters(model, tmp_path / "f.png", layer="nope")
    with pytest.raises(ValueError, match="out of range"):
        plotting.plot_filters(model, tmp_path / "f.png", layer=12)
    assert not os.listdir(tmp_path)


def test_plot_feature_maps(tmp_path, trained):
    model, _, x = trained
    conv = plotting.plot_feature_maps(model, 0, x[0], tmp_path / "conv.png")
    pooled = plotting.plot_feature_maps(model, model.layers[1], x[:1], tmp_path / "pool.png")
    assert os.path.getsize(conv) > 5000
    assert _image_size(conv) == _image_size(pooled)  # same 6-channel grid
    uint8 = plotting.plot_feature_maps(model, 2, np.zeros((12, 12, 2), np.uint8), tmp_path / "u8.png")
    assert _image_size(uint8)[0] > 300


def test_plot_feature_maps_errors(tmp_path, trained):
    model, _, x = trained
    with pytest.raises(ValueError, match=r"outputs shape \(\d+,\), not feature maps"):
        plotting.plot_feature_maps(model, "flatten", x[0], tmp_path / "f.png")
    with pytest.raises(ValueError, match="one image"):
        plotting.plot_feature_maps(model, 0, x[:2], tmp_path / "f.png")
    with pytest.raises(ValueError, match="expects inputs of shape"):
        plotting.plot_feature_maps(model, 0, x[0, :5], tmp_path / "f.png")
    with pytest.raises(ValueError, match="not a layer of this model"):
        plotting.plot_feature_maps(model, L.Conv2D(2, 3), x[0], tmp_path / "f.png")
    assert not os.listdir(tmp_path)


def test_failed_write_keeps_the_old_png(tmp_path, trained, monkeypatch):
    _, history, _ = trained
    path = plotting.plot_history(history, tmp_path / "h.png")
    before = open(path, "rb").read()

    def broken_savefig(self, *args, **kwargs):
        args[0].write(b"\x89PNG partial")
        raise OSError("disk full (simulated)")

    from matplotlib.figure import Figure

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(OSError, match="disk full"):
        plotting.plot_history({"loss": [1.0]}, path)
    assert open(path, "rb").read() == before
    _only_file(tmp_path, "h.png")


def test_missing_matplotlib_names_the_extra(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    for name in [m for m in sys.modules if m.startswith("matplotlib")]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(ImportError, match=r"pip install cnnext\[plot\]"):
        plotting.plot_history({"loss": [1.0]}, tmp_path / "h.png")
