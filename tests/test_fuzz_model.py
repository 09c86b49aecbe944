"""Fuzzing layers (inside a tiny Sequential) and the model API with hypothesis.

Each example draws a stack of layers with random hyper-parameters (some out of range or of the
wrong type) on a random input shape (1x200-style ratios included), then calls predict, evaluate
and fit with inputs of random dtype, layout and values. Every call either
- raises ValueError/TypeError whose message names the offending argument or layer, exactly when
  the call has a problem the test can name (bad hyper-parameter, wrong dtype, NaN, wrong shape,
  bad batch size), or
- succeeds and agrees with the NumPy-backend twin of the same model (same weights): predictions
  of shape ``(N, *output_shape)``, equal to the predictions of the input converted as documented
  (uint8 scaled by 1/255, other numbers cast to float32), finite evaluate losses, and the same
  weights after one epoch of fit.
Calls are counted; the test asserts its share of the suite's total.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from cnnext import backend
from cnnext import layers as L
from cnnext.models import Sequential

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")
BACKENDS = backend.available_backends()
EXAMPLES = 800
CALLS = {"made": 0}
FUZZ = settings(deadline=None, database=None, derandomize=True, max_examples=EXAMPLES,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
BAD_INTS = [0, -1, 2.5, None, "3", True, [1, 2, 3], 2**31]  # 2**31: too large a size/stride
BAD_PADDING = ["full", -1, 1.5, None, (1, 2, 3)]
ACTIVATIONS = ["relu", "tanh", "sigmoid", "linear", "leaky_relu", None]


def _count(n: int = 1) -> None:
    CALLS["made"] += n


def _param(data, name: str, good: st.SearchStrategy, bad: list, bad_names: list):
    """A good value, or (10%) a bad one whose parameter name is recorded in ``bad_names``."""
    if data.draw(st.integers(0, 9)) == 0:
        bad_names.append(name)
        return data.draw(st.sampled_from(bad))
    return data.draw(good)


def draw_layer(data):
    """``(kind, kwargs, bad_names)`` for one hidden layer."""
    kind = data.draw(st.sampled_from(["conv", "pool", "upsample", "bn", "dropout", "act"]))
    bad: list[str] = []
    pair = st.one_of(st.integers(1, 3), st.tuples(st.integers(1, 3), st.integers(1, 3)))
    padding = st.sampled_from(["valid", "same", 0, 1, (1, 0)])
    if kind == "conv":
        kwargs = dict(filters=_param(data, "filters", st.integers(1, 4), BAD_INTS[:-1], bad),
                      kernel_size=_param(data, "kernel_size", pair, BAD_INTS, bad),
                      strides=_param(data, "strides", pair, BAD_INTS, bad),
                      padding=_param(data, "padding", padding, BAD_PADDING, bad),
                      dilation_rate=_param(data, "dilation_rate", st.sampled_from([1, 2]),
                                           BAD_INTS, bad),
                      activation=_param(data, "activation", st.sampled_from(ACTIVATIONS),
                                        ["bogus", 3, "softmaxx"], bad))
    elif kind == "pool":
        kwargs = dict(pool_size=_param(data, "pool_size", pair, BAD_INTS, bad),
                      strides=_param(data, "strides", st.one_of(st.none(), pair),
                                     [v for v in BAD_INTS if v is not None], bad),
                      padding=_param(data, "padding", st.sampled_from(["valid", "same"]),
                                     BAD_PADDING, bad),
                      kind=_param(data, "kind", st.sampled_from(["max", "min", "average"]),
                                  ["median", None, 3], bad))
    elif kind == "upsample":
        kwargs = dict(size=_param(data, "size", pair, BAD_INTS, bad))
    elif kind == "bn":
        kwargs = dict(momentum=_param(data, "momentum", st.sampled_from([0.0, 0.5, 0.9]),
                                      [-0.5, 1.5, None, "0.9", True], bad))
    elif kind == "dropout":
        kwargs = dict(rate=_param(data, "rate", st.sampled_from([0.0, 0.3]), [-0.1, 1.0, 2, None, "a", float("nan")], bad))
    else:
        kwargs = dict(activation=_param(data, "activation", st.sampled_from(ACTIVATIONS[:-1]),
                                        ["bogus", 7], bad))
    return kind, kwargs, bad


CLASSES = {"conv": L.Conv2D, "pool": L.Pool2D, "upsample": L.UpSample2D,
           "bn": L.BatchNormalization, "dropout": L.Dropout, "act": L.Activation}


def _expect_error(exc: Exception, words: list[str]) -> None:
    assert isinstance(exc, (ValueError, TypeError)), repr(exc)
    assert any(w in str(exc) for w in words), (str(exc), words)


def build_models(data) -> list[Sequential] | None:
    """The same compiled Sequential (random layers, random input shape, one seed) once per
    backend, or None when a layer or the shapes cannot work (after checking that the error
    names the culprit)."""
    h, w = data.draw(st.sampled_from([(6, 6), (5, 7), (1, 40), (40, 1), (3, 3), (8, 4)]))
    c = data.draw(st.integers(1, 3))
    specs = []
    for _ in range(data.draw(st.integers(1, 3))):
        kind, kwargs, bad = draw_layer(data)
        note(f"{kind} {kwargs}")
        _count()
        try:
            CLASSES[kind](**kwargs)
        except (ValueError, TypeError) as exc:
            assert bad, f"{kind}{kwargs} was refused: {exc}"
            _expect_error(exc, bad)
            return None
        assert not bad, f"{kind}{kwargs} was accepted despite bad {bad}"
        specs.append((CLASSES[kind], kwargs))
    classes = data.draw(st.integers(2, 4))
    models = []
    for name in BACKENDS:
        layers = [cls(**kwargs) for cls, kwargs in specs]
        model = Sequential([*layers, L.Flatten(), L.Dense(classes, activation="softmax")],
                           seed=3, backend=name)
        _count()
        try:
            model.build((h, w, c))
        except ValueError as exc:  # shapes cannot work: the message names the layer
            _expect_error(exc, [f"layer '{layer.name}'" for layer in layers])
            return None
        model.compile("sgd", "sparse_categorical_crossentropy", ["accuracy"])
        models.append(model)
    return models


def draw_input(data, shape: tuple):
    """``(x, reference, problem words)``: an input in a random dtype/layout, the float32 array
    the model must see (None when the input is invalid) and words its error must contain."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    kind = data.draw(st.sampled_from(["float32", "float64", "float16", "uint8", "int16", "bool",
                                      "fortran", "readonly", "broadcast", "strided", "list",
                                      "nan", "inf", "complex", "object", "str", "shape",
                                      "empty"]))
    base = rng.normal(size=shape)
    if kind in ("float32", "float64", "float16", "int16", "bool"):
        x = (base > 0) if kind == "bool" else (base * 3).astype(kind)
        return x, x.astype(np.float32), None
    if kind == "uint8":
        x = rng.integers(0, 256, size=shape, dtype=np.uint8)
        return x, x.astype(np.float32) * np.float32(1 / 255), None
    x = base.astype(np.float32)
    if kind == "fortran":
        return np.asfortranarray(x), x, None
    if kind == "readonly":
        x.setflags(write=False)
        return x, x, None
    if kind == "broadcast":
        view = np.broadcast_to(x[:1], shape)
        return view, np.array(view), None
    if kind == "strided":
        return np.repeat(x, 2, axis=-1)[..., ::2], x, None
    if kind == "list":
        return x.tolist(), x.astype(np.float64).astype(np.float32), None
    if kind in ("nan", "inf"):
        x.flat[rng.integers(x.size)] = np.nan if kind == "nan" else -np.inf
        return x, None, ["NaN"]
    if kind in ("complex", "object", "str"):
        x = {"complex": x.astype(np.complex64), "object": x.astype(object),
             "str": x.astype(str)}[kind]
        return x, None, ["dtype"]
    if kind == "shape":
        return x[..., :1] if shape[-1] > 1 else np.concatenate([x, x], axis=-1), None, \
            ["expects inputs of shape"]
    return x[:0], None, ["at least one sample"]


def check_predict(models: list[Sequential], data) -> None:
    n = data.draw(st.integers(1, 5))
    x, reference, problem = draw_input(data, (n, *models[0].input_shape))
    batch_size = data.draw(st.sampled_from([1, 2, 32, 0, -1, 2.5, None]))
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        problem = (problem or []) + ["batch_size"]
    outputs = []
    for model in models:
        _count()
        try:
            outputs.append(model.predict(x, batch_size=batch_size))
        except (ValueError, TypeError) as exc:
            assert problem, f"predict refused a valid input: {exc!r}"
            _expect_error(exc, problem)
            continue
        assert not problem, f"predict accepted an input with problems {problem}"
    if problem:
        return
    for model, out in zip(models, outputs):
        assert out.shape == (n, *model.output_shape) and out.dtype == np.float32
        np.testing.assert_array_equal(out, model.predict(reference, batch_size=batch_size))
        _count()
        np.testing.assert_allclose(out, outputs[0], rtol=1e-4, atol=1e-5)


def check_evaluate_and_fit(models: list[Sequential], data) -> None:
    n = data.draw(st.integers(1, 6))
    classes = models[0].output_shape[-1]
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    x = rng.normal(size=(n, *models[0].input_shape)).astype(np.float32)
    label_kind = data.draw(st.sampled_from(["ids", "ids", "onehot", "out_of_range", "count"]))
    y = rng.integers(0, classes, n)
    words = None
    if label_kind == "onehot":
        y = np.eye(classes)[y]
    elif label_kind == "out_of_range":
        y[0] = classes
        words = ["class", "label"]
    elif label_kind == "count":
        y, words = y[:-1] if n > 1 else np.append(y, 0), ["samples"]
    losses, weights, batch_size = [], [], data.draw(st.integers(1, 4))
    for model in models:
        _count(2)
        try:
            losses.append(model.evaluate(x, y, batch_size=2))
            model.fit(x, y, epochs=1, batch_size=batch_size, shuffle=False,
                      verbose=0)
        except (ValueError, TypeError) as exc:
            assert words, f"evaluate/fit refused valid labels: {exc!r}"
            _expect_error(exc, words)
            continue
        assert not words, f"evaluate/fit accepted bad labels ({label_kind})"
        weights.append(model.get_weights())
    if words:
        return
    assert all(math.isfinite(v) for loss in losses for v in loss)
    for loss in losses[1:]:
        np.testing.assert_allclose(loss, losses[0], rtol=1e-4, atol=1e-5)
    for ws in weights[1:]:
        for got, ref in zip(ws, weights[0]):
            np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-4)


@FUZZ
@given(st.data())
def _fuzz_model(data) -> None:
    models = build_models(data)
    if models is None:
        return
    check_predict(models, data)
    check_evaluate_and_fit(models, data)


def test_fuzz_layers_and_model_api():
    before = CALLS["made"]
    _fuzz_model()
    made = CALLS["made"] - before
    print(f"\nlayers/model API: {made} fuzzed calls")
    assert made >= 4 * EXAMPLES
