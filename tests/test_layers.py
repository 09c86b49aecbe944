"""Layers: finite-difference gradient checks (float64, both backends), shapes, configs, errors."""
from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest

from cnnext import Sequential
from cnnext import layers as L
from cnnext.layers import get_layer_class

RNG = np.random.default_rng(1234)


def build(layer: L.Layer, input_shape, backend: str, seed: int = 0) -> L.Layer:
    layer.dtype = np.dtype("float64")
    layer.backend = backend
    layer.seed_sequence = np.random.SeedSequence(seed)
    layer.build(input_shape)
    return layer


def check_layer_gradients(layer: L.Layer, x: np.ndarray, training: bool, numerical_grad,
                          before_forward=None):
    """``backward`` of ``sum(forward(x) * r)`` equals central differences for x and every param."""
    before_forward = before_forward or (lambda: None)

    def forward():
        before_forward()
        return layer.forward(x, training)

    r = RNG.standard_normal(forward().shape)
    loss = lambda: float(np.sum(forward() * r))  # noqa: E731
    forward()
    dx = layer.backward(r)
    analytic = {key: g.copy() for key, g in layer.grads.items()}
    np.testing.assert_allclose(dx, numerical_grad(loss, x), rtol=1e-5, atol=1e-7)
    for key, param in layer.params.items():
        np.testing.assert_allclose(analytic[key], numerical_grad(loss, param), rtol=1e-5,
                                   atol=1e-7, err_msg=f"{layer.name}.{key}")


GRADCHECK_CASES = [
    (lambda: L.Conv2D(3, 3, strides=2, padding="same", activation="tanh"), (7, 6, 2)),
    (lambda: L.Conv2D(2, (2, 3), padding=1, dilation_rate=2, activation="relu", use_bias=False),
     (6, 7, 3)),
    (lambda: L.Conv2D(2, 3, activation="softmax", bias_initializer="ones"), (5, 5, 2)),
    (lambda: L.MaxPool2D(3, strides=(1, 2), padding="same"), (5, 6, 2)),
    (lambda: L.MinPool2D(2), (4, 6, 3)),
    (lambda: L.AvgPool2D(3, strides=2, padding=1), (5, 5, 2)),
    (lambda: L.Pool2D(2, kind="average", padding="same"), (5, 3, 2)),
    (lambda: L.UpSample2D((2, 3)), (3, 2, 2)),
    (lambda: L.Flatten(), (3, 2, 2)),
    (lambda: L.Dense(4, activation="sigmoid"), (5,)),
    (lambda: L.Dense(3, activation=("leaky_relu"), kernel_initializer="he_normal"), (2, 5)),
    (lambda: L.Activation("softmax"), (6,)),
    (lambda: L.Activation("leaky_relu", alpha=0.2), (3, 3, 2)),
    (lambda: L.Activation("tanh"), (4,)),
    (lambda: L.Activation("relu"), (4,)),
    (lambda: L.Activation("linear"), (4,)),
]


@pytest.mark.parametrize("make, input_shape", GRADCHECK_CASES,
                         ids=[f"{i}" for i in range(len(GRADCHECK_CASES))])
def test_layer_gradients_match_finite_differences(make, input_shape, backend_name,
                                                  numerical_grad):
    layer = build(make(), input_shape, backend_name)
    x = RNG.standard_normal((2, *input_shape))
    check_layer_gradients(layer, x, True, numerical_grad)


@pytest.mark.parametrize("input_shape", [(4, 3, 3), (5,)])
@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_gradients(input_shape, training, numerical_grad):
    layer = build(L.BatchNormalization(), input_shape, "numpy")
    layer.params["gamma"][:] = RNG.uniform(0.5, 2.0, layer.params["gamma"].shape)
    layer.params["beta"][:] = RNG.standard_normal(layer.params["beta"].shape)
    layer.state["moving_mean"][:] = RNG.standard_normal(layer.state["moving_mean"].shape)
    layer.state["moving_variance"][:] = RNG.uniform(0.5, 2.0, layer.params["gamma"].shape)
    x = RNG.standard_normal((3, *input_shape)) * 2 + 1
    check_layer_gradients(layer, x, training, numerical_grad)


def test_dropout_gradients_with_fixed_mask(numerical_grad):
    layer = build(L.Dropout(0.4, seed=7), (4, 3), "numpy")
    x = RNG.standard_normal((5, 4, 3))

    def reseed():
        layer.rng = np.random.default_rng(7)

    check_layer_gradients(layer, x, True, numerical_grad, before_forward=reseed)
    reseed()
    assert np.count_nonzero(layer.forward(x, training=True)) < x.size  # the mask dropped some


def test_dropout_scales_in_training_and_is_identity_in_inference():
    layer = build(L.Dropout(0.25, seed=3), (1000,), "numpy")
    x = np.ones((20, 1000))
    y = layer.forward(x, training=True)
    kept = y != 0
    assert abs(kept.mean() - 0.75) < 0.01
    np.testing.assert_allclose(y[kept], 1 / 0.75)
    assert abs(y.mean() - 1.0) < 0.02
    np.testing.assert_array_equal(layer.forward(x, training=False), x)
    np.testing.assert_array_equal(layer.backward(x), x)  # inference: identity backward


def test_dropout_rejects_bad_rate():
    for rate in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match="rate"):
            L.Dropout(rate)


def test_batchnorm_training_normalises_and_updates_moving_stats():
    layer = build(L.BatchNormalization(momentum=0.9, epsilon=1e-5), (3, 3, 2), "numpy")
    x = RNG.standard_normal((8, 3, 3, 2)) * np.array([2.0, 0.5]) + np.array([3.0, -1.0])
    y = layer.forward(x, training=True)
    np.testing.assert_allclose(y.mean(axis=(0, 1, 2)), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=(0, 1, 2)), 1, rtol=1e-3)
    np.testing.assert_allclose(layer.state["moving_mean"], 0.1 * x.mean(axis=(0, 1, 2)))
    np.testing.assert_allclose(layer.state["moving_variance"],
                               0.9 + 0.1 * x.var(axis=(0, 1, 2)))
    y_inf = layer.forward(x, training=False)
    expected = (x - layer.state["moving_mean"]) / np.sqrt(layer.state["moving_variance"] + 1e-5)
    np.testing.assert_allclose(y_inf, expected)


def test_conv_layer_matches_functional_op(backend_name):
    from cnnext import ops

    layer = build(L.Conv2D(4, 3, strides=2, padding="same", dilation_rate=1), (9, 8, 3),
                  backend_name)
    x = RNG.standard_normal((2, 9, 8, 3))
    expected = ops.conv2d(x, layer.params["kernel"], layer.params["bias"], stride=2,
                          padding="same", backend="numpy")
    np.testing.assert_allclose(layer.forward(x), expected, rtol=1e-10, atol=1e-12)
    assert layer.output_shape == expected.shape[1:] == (5, 4, 4)


def test_dense_layers_and_the_optimizer_use_the_model_backend(backend_name, monkeypatch):
    """Training and inference passes of Dense layers, and the optimizer update, go through the
    model's backend (never the other table)."""
    from cnnext import Sequential
    from cnnext.backend import BACKENDS

    calls: list[tuple[str, str]] = []
    for label, table in BACKENDS.items():
        for name in ("dense_forward", "dense_backward", "sgd_update"):
            original = getattr(table, name)

            def spy(*args, _name=name, _label=label, _original=original, **kwargs):
                calls.append((_name, _label))
                return _original(*args, **kwargs)

            monkeypatch.setattr(table, name, spy)
    model = Sequential([L.Dense(3, activation="relu", input_shape=(4,)), L.Dense(2)],
                       seed=0, backend=backend_name)
    model.compile("sgd", "mse")
    x = RNG.standard_normal((6, 4)).astype(np.float32)
    model.train_on_batch(x, np.zeros((6, 2), np.float32))
    assert calls == ([("dense_forward", backend_name)] * 2 + [("dense_backward", backend_name)] * 2
                     + [("sgd_update", backend_name)] * 4)
    calls.clear()
    model.predict(x)
    assert calls == [("dense_forward", backend_name)] * 2


@pytest.mark.parametrize("layer, input_shape, expected", [
    (L.Conv2D(8, 3), (28, 28, 1), (26, 26, 8)),
    (L.Conv2D(8, 5, padding="same", strides=2), (28, 28, 1), (14, 14, 8)),
    (L.Conv2D(2, 3, dilation_rate=2), (10, 9, 4), (6, 5, 2)),
    (L.Conv2D(2, 3, padding=(2, 0)), (5, 5, 1), (7, 3, 2)),
    (L.MaxPool2D(), (26, 26, 4), (13, 13, 4)),
    (L.AvgPool2D(3, strides=2, padding="same"), (7, 7, 3), (4, 4, 3)),
    (L.UpSample2D(2), (3, 4, 5), (6, 8, 5)),
    (L.Flatten(), (12, 12, 8), (1152,)),
    (L.Dense(10), (968,), (10,)),
    (L.Dense(3), (4, 5), (4, 3)),
])
def test_output_shapes(layer, input_shape, expected):
    build(layer, input_shape, "numpy")
    assert layer.output_shape == expected
    x = RNG.standard_normal((2, *input_shape))
    assert layer.forward(x).shape == (2, *expected)


def test_param_shapes_and_counts():
    conv = build(L.Conv2D(4, 3), (28, 28, 1), "numpy")
    assert conv.params["kernel"].shape == (3, 3, 1, 4) and conv.params["bias"].shape == (4,)
    assert conv.count_params() == (40, 0)
    dense = build(L.Dense(10, use_bias=False), (968,), "numpy")
    assert list(dense.params) == ["kernel"] and dense.count_params() == (9680, 0)
    bn = build(L.BatchNormalization(), (5, 5, 8), "numpy")
    assert bn.count_params() == (16, 16)
    bn.trainable = False
    assert bn.count_params() == (0, 32)


@pytest.mark.parametrize("layer, input_shape, match", [
    (L.Conv2D(2, 5, name="big"), (3, 3, 1), "'big'.*larger than"),
    (L.Conv2D(2, 3, dilation_rate=3), (6, 6, 1), "dilation"),
    (L.Conv2D(2, 3), (28, 28), r"\(H, W, C\)"),
    (L.MaxPool2D(4, name="pool"), (3, 8, 2), "'pool'.*larger than"),
    (L.MaxPool2D(2, padding=2), (8, 8, 2), "smaller than pool_size"),
    (L.UpSample2D(2), (8,), r"\(H, W, C\)"),
])
def test_build_errors_name_the_layer(layer, input_shape, match):
    with pytest.raises(ValueError, match=match):
        build(layer, input_shape, "numpy")


@pytest.mark.parametrize("make, match", [
    (lambda: L.Conv2D(0, 3), "filters"),
    (lambda: L.Conv2D(2, 0), "kernel_size"),
    (lambda: L.Conv2D(2, 3, strides=(1, 0)), "strides"),
    (lambda: L.Conv2D(2, 3, padding="full"), "padding"),
    (lambda: L.Conv2D(2, 3, activation="swish"), "unknown activation"),
    (lambda: L.Conv2D(2, 3, kernel_initializer="lecun"), "unknown initializer"),
    (lambda: L.Pool2D(kind="median"), "kind"),
    (lambda: L.Dense(-1), "units"),
    (lambda: L.Dense(2, name=""), "name"),
    (lambda: L.BatchNormalization(momentum=1.5), "momentum"),
    (lambda: L.Dense(2, use_bias="no"), "use_bias must be True or False; received use_bias='no'"),
    (lambda: L.Conv2D(2, 3, use_bias=1), "use_bias must be True or False"),
    (lambda: L.Flatten(trainable="no"), "trainable must be True or False"),
    (lambda: L.Dropout(0.5, seed=-1), "seed must be an int >= 0 or None; received seed=-1"),
])
def test_constructor_errors(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


ALL_LAYERS = [
    (lambda: L.Conv2D(3, (3, 2), strides=2, padding="same", dilation_rate=1, activation="relu",
                      use_bias=False, kernel_initializer="he_uniform", input_shape=(8, 8, 2),
                      name="c1"), (8, 8, 2)),
    (lambda: L.Conv2D(2, 3, padding=(1, 0), activation={"name": "leaky_relu", "alpha": 0.3}),
     (6, 6, 1)),
    (lambda: L.Pool2D(3, strides=1, padding="same", kind="min"), (5, 5, 2)),
    (lambda: L.MaxPool2D(2), (4, 4, 1)),
    (lambda: L.MinPool2D((2, 1)), (4, 4, 1)),
    (lambda: L.AvgPool2D(2, padding=1), (4, 4, 1)),
    (lambda: L.UpSample2D((1, 2)), (2, 2, 3)),
    (lambda: L.Flatten(name="flat"), (2, 2, 3)),
    (lambda: L.Dense(5, activation="softmax", trainable=False), (7,)),
    (lambda: L.Dropout(0.3, seed=4), (7,)),
    (lambda: L.BatchNormalization(momentum=0.8, epsilon=1e-4), (3, 3, 2)),
    (lambda: L.Activation("leaky_relu", alpha=0.1), (3,)),
]


@pytest.mark.parametrize("make, input_shape", ALL_LAYERS, ids=[str(i) for i in range(12)])
def test_config_round_trip_and_weights(make, input_shape):
    layer = build(make(), input_shape, "numpy", seed=1)
    config = layer.get_config()
    restored_config = json.loads(json.dumps(config))
    clone = get_layer_class(type(layer).__name__).from_config(restored_config)
    assert type(clone) is type(layer) and clone.get_config() == config
    build(clone, input_shape, "numpy", seed=2)
    clone.set_weights(layer.get_weights())
    x = RNG.standard_normal((3, *input_shape))
    np.testing.assert_array_equal(clone.forward(x), layer.forward(x))
    for a, b in zip(clone.get_weights(), layer.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_set_weights_checks_count_and_shapes():
    layer = build(L.Dense(3, name="d"), (4,), "numpy")
    with pytest.raises(ValueError, match="expected 2 weight arrays"):
        layer.set_weights([np.zeros((4, 3))])
    with pytest.raises(ValueError, match=r"'kernel' has shape \(4, 3\)"):
        layer.set_weights([np.zeros((3, 4)), np.zeros(3)])
    with pytest.raises(ValueError, match="build"):
        L.Dense(3).set_weights([])


def test_registry_aliases_and_unknown_names():
    assert get_layer_class("MaxPooling2D") is L.MaxPool2D
    assert get_layer_class("AveragePooling2D") is L.AvgPool2D
    assert get_layer_class("UpSampling2D") is L.UpSample2D
    assert get_layer_class("Pool2d") is L.Pool2D
    assert all(getattr(L, alias) is cls for alias, cls in L.ALIASES.items())
    with pytest.raises(ValueError, match="unknown layer class 'Conv3D'"):
        get_layer_class("Conv3D")


def test_same_seed_gives_same_weights_and_float32_default():
    a = L.Conv2D(4, 3)
    a.seed_sequence = np.random.SeedSequence(5)
    a.build((6, 6, 2))
    b = L.Conv2D(4, 3)
    b.seed_sequence = np.random.SeedSequence(5)
    b.build((6, 6, 2))
    assert a.params["kernel"].dtype == np.float32
    np.testing.assert_array_equal(a.params["kernel"], b.params["kernel"])
    c = build(L.Conv2D(4, 3), (6, 6, 2), "numpy", seed=6)
    assert not np.allclose(a.params["kernel"], c.params["kernel"])


def test_layer_call_builds_from_first_batch():
    layer = L.Dense(2, activation="relu")
    y = layer(np.ones((3, 4), dtype=np.float32))
    assert layer.built and layer.input_shape == (4,) and y.shape == (3, 2)
    assert y.dtype == np.float32
    with pytest.raises(ValueError, match="built for input shape"):
        layer.build((5,))


def test_layer_call_on_integer_input_builds_float32_weights(backend_name):
    """Integer input used to give integer weights (all zero after the initialiser's cast)."""
    layer = L.Conv2D(2, 2)
    layer.backend = backend_name
    x = np.arange(2 * 4 * 4, dtype=np.int64).reshape(2, 4, 4, 1)
    y = layer(x)
    assert layer.params["kernel"].dtype == np.float32 and layer.params["kernel"].any()
    assert y.dtype == np.float32
    expected = layer(x.astype(np.float32))
    np.testing.assert_array_equal(y, expected)


def test_a_built_layer_cannot_join_a_model_of_another_dtype():
    layer = L.Dense(2)
    layer(np.ones((1, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="'dense.*' was built with float32 weights and cannot "
                                         "join the float64 model"):
        Sequential([L.Dense(3, input_shape=(3,)), layer], dtype="float64")
    model = Sequential([L.Dense(3, input_shape=(3,)), layer])  # the same dtype is fine
    assert model.predict(np.ones((1, 3))).dtype == np.float32
    pool = L.MaxPool2D(2)  # no weights: it may join a model of any dtype
    pool(np.ones((1, 4, 4, 1), dtype=np.float32))
    wide = Sequential([L.Conv2D(1, 1, input_shape=(4, 4, 1)), pool], dtype="float64")
    assert wide.predict(np.ones((1, 4, 4, 1))).dtype == np.float64


@pytest.mark.parametrize("x", [np.array([["1", "2", "3"]]), np.ones((1, 3), dtype=complex)])
def test_a_layer_called_on_strings_or_complex_numbers_refuses_them(x):
    with pytest.raises(TypeError, match="takes real numbers; received an array of dtype"):
        L.Dense(2)(x)


@pytest.mark.parametrize("epsilon", [0.0, -1e-3, np.nan, np.inf])
def test_batchnorm_epsilon_must_be_finite_and_positive(epsilon):
    with pytest.raises(ValueError, match="epsilon must be a finite number > 0"):
        L.BatchNormalization(epsilon=epsilon)


def test_conv_stride_far_beyond_the_input_is_clamped_for_the_kernels(backend_name):
    """A stride of 10**6 leaves one output pixel, as a stride of the input size does; the layer
    must give that result (forward and backward) without sizing buffers by the stride."""
    x = np.random.default_rng(0).random((4, 9, 7, 2)).astype(np.float32)
    dy = np.random.default_rng(1).random((4, 1, 1, 3)).astype(np.float32)
    results = []
    for stride in (10**6, 9):
        layer = L.Conv2D(3, 3, strides=stride, padding="same")
        layer.backend, layer.seed_sequence = backend_name, np.random.SeedSequence(0)
        tracemalloc.start()
        try:
            y = layer(x)
            results.append((y, layer.backward(dy), layer.grads["kernel"]))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 2**20, f"stride {stride}: {peak} bytes of buffers for a 4x9x7x2 input"
    for huge, plain in zip(*results):
        np.testing.assert_array_equal(huge, plain)
