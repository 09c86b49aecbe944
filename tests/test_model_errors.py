"""Sequential: clear errors for bad input, and atomic optimizer steps under Ctrl-C."""
from __future__ import annotations

import os
import signal
import warnings

import numpy as np
import pytest

from cnnext import Sequential, optimizers
from cnnext import layers as L


def model(compiled: bool = True, loss: str = "sparse_categorical_crossentropy"):
    m = Sequential([L.Conv2D(2, 3, activation="relu", input_shape=(6, 6, 1)), L.Flatten(),
                    L.Dense(3, activation="softmax", name="out")], seed=0, backend="numpy")
    if compiled:
        m.compile("sgd", loss, ["accuracy"])
    return m


X = np.random.default_rng(0).random((4, 6, 6, 1)).astype(np.float32)
Y = np.array([0, 1, 2, 1])


def test_fit_before_compile():
    for call in (lambda m: m.fit(X, Y), lambda m: m.evaluate(X, Y),
                 lambda m: m.train_on_batch(X, Y)):
        with pytest.raises(RuntimeError, match="not compiled.*compile"):
            call(model(compiled=False))


@pytest.mark.parametrize("x, match", [
    (X[..., 0], r"expects inputs of shape \(N, 6, 6, 1\).*channel axis"),
    (np.zeros((4, 7, 6, 1)), r"expects inputs of shape \(N, 6, 6, 1\), received \(4, 7, 6, 1\)"),
    (np.zeros(5), "batch axis"),
    (np.zeros((0, 6, 6, 1)), "at least one sample"),
])
def test_wrong_input_shape(x, match):
    with pytest.raises(ValueError, match=match):
        model().fit(x, Y[: len(x)] if len(x) else Y[:0], verbose=0)
    with pytest.raises(ValueError, match=match):
        model().predict(x)


def test_nan_and_inf_inputs():
    bad = X.copy()
    bad[2, 1, 1, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite.*sample 2"):
        model().fit(bad, Y, verbose=0)
    bad[2, 1, 1, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        model().predict(bad)
    with pytest.raises(TypeError, match="numeric"):
        model().predict(np.array([["a"]]))


@pytest.mark.parametrize("y, match", [
    (np.array([0, 1, 2]), "4 samples but y has 3"),
    (np.array([0, 1, 3, 1]), "label 3 is out of range for a model with 3 output classes"),
    (np.array([0, -1, 2, 1]), "label -1 is out of range"),
    (np.eye(4), r"labels of shape \(4, 4\) do not fit.*\(N, 3\)"),
    (np.array([0.5, 1, 2, 1]), "integers"),
    (np.array([0, 1e20, 2, 1]), "label 100000000000000000000 is out of range"),
    (np.array([0, -3.0, 2, 1]), "label -3 is out of range"),
])
def test_label_mismatches(y, match):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. no RuntimeWarning from casting huge floats
        with pytest.raises(ValueError, match=match):
            model().fit(X, y, verbose=0)


def test_label_errors_for_other_losses():
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        model(loss="mse").fit(X, Y, verbose=0)
    single = Sequential([L.Flatten(input_shape=(6, 6, 1)), L.Dense(1, activation="sigmoid")])
    single.compile("sgd", "binary_crossentropy")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        single.fit(X, np.array([0, 1, 2, 1]), verbose=0)
    single.compile("sgd", "categorical_crossentropy")
    with pytest.raises(ValueError, match="binary_crossentropy"):
        single.fit(X, Y, verbose=0)


@pytest.mark.parametrize("kwargs, match", [
    ({"optimizer": "adagrad"}, "unknown optimizer 'adagrad'"),
    ({"loss": "hinge"}, "unknown loss 'hinge'"),
    ({"metrics": ["f1"]}, "unknown metric 'f1'"),
])
def test_unknown_names(kwargs, match):
    with pytest.raises(ValueError, match=match):
        model(compiled=False).compile(**{"optimizer": "sgd", "loss": "mse", **kwargs})


@pytest.mark.parametrize("kwargs, match", [
    ({"batch_size": 0}, "batch_size"),
    ({"epochs": -1}, "epochs"),
    ({"verbose": 3}, "verbose"),
    ({"validation_split": 1.5}, "validation_split"),
    ({"validation_split": 0.9}, "leaves no"),
    ({"validation_data": (X,)}, "validation_data"),
])
def test_bad_fit_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        model().fit(X, Y, **{"verbose": 0, **kwargs})


@pytest.mark.parametrize("dtype, expected", [
    ("float64", np.float64), (np.float64, np.float64), (np.float32, np.float32),
    (np.dtype("f4"), np.float32), ("d", np.float64),
])
def test_the_model_dtype_may_be_named_as_numpy_does(dtype, expected):
    assert Sequential(dtype=dtype).dtype == expected


@pytest.mark.parametrize("dtype", ["float16", np.int32, None, ">f8", "complex64", "floaty"])
def test_the_model_dtype_is_native_float32_or_float64(dtype):
    with pytest.raises(ValueError, match="dtype must be one of"):
        Sequential(dtype=dtype)


def test_other_model_errors():
    with pytest.raises(ValueError, match="dtype"):
        Sequential(dtype="float16")
    with pytest.raises(ValueError, match="backend"):
        Sequential(backend="cuda")
    with pytest.raises(TypeError, match="expects a Layer"):
        Sequential([np.zeros(3)])
    with pytest.raises(ValueError, match="not built"):
        Sequential([L.Dense(2)]).summary()
    with pytest.raises(ValueError, match="no layers"):
        Sequential().build((3,))
    with pytest.raises(ValueError, match="has 4 weight arrays"):
        model().set_weights([np.zeros(2)])
    logits_twice = model(compiled=False)
    from cnnext.losses import SparseCategoricalCrossentropy

    logits_twice.compile("sgd", SparseCategoricalCrossentropy(from_logits=True))
    with pytest.raises(ValueError, match="from_logits=True.*already applies softmax"):
        logits_twice.fit(X, Y, verbose=0)


class InterruptedSGD(optimizers.SGD):
    """SGD that adds 1 to every parameter and receives Ctrl-C halfway through its second step."""

    def update(self, key, param, grad, lr):
        if self.iterations == 2 and not getattr(self, "fired", False):
            self.fired = True
            os.kill(os.getpid(), signal.SIGINT)
        param += 1.0


def test_keyboard_interrupt_never_half_applies_a_step():
    m = model(compiled=False)
    m.compile(InterruptedSGD(), "sparse_categorical_crossentropy")
    before = m.get_weights()
    with pytest.raises(KeyboardInterrupt):
        m.fit(X, Y, epochs=3, batch_size=2, shuffle=False, verbose=1)
    after = m.get_weights()
    assert m.optimizer.iterations == 2
    for a, b in zip(before, after):
        np.testing.assert_array_equal(b, (a + 1.0) + 1.0)  # both steps applied everywhere
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
