"""The seed write-up's four test architectures (and LeNet-5), as built by the scripts in examples/:
shapes and parameter counts match the write-up's summaries, they learn, and the scripts run."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

import cnnext
from cnnext.datasets import load_fashion_mnist
from cnnext.preprocessing import one_hot, to_float

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")

# (output shape, parameters) per layer. Conv2D: KH*KW*C*F + F; Dense: inputs*units + units.
EXPECTED = {
    # 3*3*1*8+8 = 80; 26*26*8 = 5408 inputs -> 5408*10+10 = 54,090; total 54,170
    "seed_test1": [((26, 26, 8), 80), ((5408,), 0), ((10,), 54090)],
    # 80; 3*3*8*16+16 = 1,168; 24*24*16 = 9216 -> 9216*10+10 = 92,170; total 93,418
    "seed_test2": [((26, 26, 8), 80), ((24, 24, 16), 1168), ((9216,), 0), ((10,), 92170)],
    # the write-up's own table: 40, 0, 296, 0, 0, 9690 = 10,026
    "seed_test3": [((26, 26, 4), 40), ((13, 13, 4), 0), ((11, 11, 8), 296), ((11, 11, 8), 0),
                   ((968,), 0), ((10,), 9690)],
    # the write-up's own table: 40, 296, 0, 0, 73792, 0, 650 = 74,778
    "seed_test4": [((26, 26, 4), 40), ((24, 24, 8), 296), ((12, 12, 8), 0), ((1152,), 0),
                   ((64,), 73792), ((64,), 0), ((10,), 650)],
    # 5*5*1*6+6 = 156; 5*5*6*16+16 = 2,416; 400*120+120 = 48,120; 120*84+84 = 10,164;
    # 84*10+10 = 850; total 61,706
    "lenet5": [((28, 28, 6), 156), ((14, 14, 6), 0), ((10, 10, 16), 2416), ((5, 5, 16), 0),
               ((400,), 0), ((120,), 48120), ((84,), 10164), ((10,), 850)],
}
TOTALS = {"seed_test1": 54170, "seed_test2": 93418, "seed_test3": 10026, "seed_test4": 74778,
          "lenet5": 61706}


def _example(name: str, monkeypatch):
    monkeypatch.syspath_prepend(EXAMPLES)  # the scripts import their shared _common module
    spec = importlib.util.spec_from_file_location(f"example_{name}", os.path.join(EXAMPLES, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def batch():
    """32 fixed Fashion-MNIST training images (bundled sample or system copy), one-hot labels."""
    (x, y), _ = load_fashion_mnist()
    return to_float(x[:32]), one_hot(y[:32], 10)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_summary_matches_the_write_up(name, monkeypatch):
    model = _example(name, monkeypatch).build_model()
    assert model.input_shape == (28, 28, 1)
    assert [(layer.output_shape, sum(layer.count_params())) for layer in model.layers] == EXPECTED[name]
    lines: list[str] = []
    model.summary(print_fn=lines.append)
    rows = [line for line in lines if line.startswith(tuple(layer.name + " " for layer in model.layers))]
    assert [row.split()[-1] for row in rows] == [f"{p:,}" for _, p in EXPECTED[name]]
    assert f"Total params: {TOTALS[name]:,}" in lines
    assert sum(model.count_params()) == TOTALS[name]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_learns_a_small_batch(name, monkeypatch, batch):
    model = _example(name, monkeypatch).build_model()
    x, y = batch
    before = model.evaluate(x, y, batch_size=32)[0]
    for _ in range(25):
        model.train_on_batch(x, y)
    after = model.evaluate(x, y, batch_size=32)[0]
    assert np.isfinite(after)
    assert after < 0.75 * before, (before, after)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_script_runs(name, tmp_path):
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(cnnext.__file__)),
               MPLBACKEND="Agg")
    plots = tmp_path / "plots"
    result = subprocess.run(
        [sys.executable, os.path.join(EXAMPLES, f"{name}.py"), "--epochs", "1", "--train", "64",
         "--val", "32", "--save", str(tmp_path / "model.npz"), "--plots", str(plots)],
        capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"Total params: {TOTALS[name]:,}" in result.stdout
    assert "val_accuracy" in result.stderr  # the progress bar's epoch line
    assert sorted(os.listdir(plots)) == ["feature_maps.png", "filters.png", "history.png"]
    loaded = cnnext.load_model(tmp_path / "model.npz")
    assert loaded.count_params()[0] == TOTALS[name]
