"""A model applies a layer's ReLU after the max/min pooling that follows it (they commute): the
outputs, losses and trained weights are exactly those of the unfused order."""
from __future__ import annotations

import numpy as np
import pytest

from cnnext import Sequential, layers, optimizers

RNG = np.random.default_rng(9)


def _model(backend_name: str, dtype: str, pool: str, padding: str) -> Sequential:
    model = Sequential(seed=4, dtype=dtype, backend=backend_name, layers=[
        layers.Conv2D(5, 3, padding="same", activation="relu", input_shape=(12, 12, 2)),
        layers.Pool2D(2, kind=pool, padding=padding),
        layers.Conv2D(4, 3, activation="relu"),
        layers.Pool2D(3, strides=1, kind=pool),  # overlapping windows
        layers.Flatten(),
        layers.Dense(6, activation="relu"),
        layers.Dense(3, activation="softmax"),
    ])
    model.compile(optimizer=optimizers.SGD(learning_rate=0.2, momentum=0.9),
                  loss="sparse_categorical_crossentropy")
    return model


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("pool, padding", [("max", "valid"), ("min", "same"), ("max", "same")])
def test_fused_relu_and_pooling_train_exactly_like_the_layer_order(backend_name, dtype, pool,
                                                                    padding, monkeypatch):
    x = RNG.standard_normal((24, 12, 12, 2))
    x[0, :3, :3] = 0.0  # ties, and windows whose maximum is not positive
    x[1, 4:, 4:] = -1.0
    y = RNG.integers(0, 3, 24)
    fused = _model(backend_name, dtype, pool, padding)
    assert fused._relu_pool_pairs() == {0, 2}
    fused_losses = [fused.train_on_batch(x[s:s + 8], y[s:s + 8]) for s in (0, 8, 16, 0)]
    fused_out = fused.predict(x)

    monkeypatch.setattr(Sequential, "_relu_pool_pairs", lambda self: frozenset())
    plain = _model(backend_name, dtype, pool, padding)
    assert [plain.train_on_batch(x[s:s + 8], y[s:s + 8]) for s in (0, 8, 16, 0)] == fused_losses
    for a, b in zip(fused.get_weights(), plain.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(plain.predict(x), fused_out)


def test_only_relu_before_max_or_min_pooling_is_fused():
    model = Sequential(layers=[
        layers.Conv2D(2, 3, activation="relu", input_shape=(12, 12, 1)),
        layers.AvgPool2D(2),                        # avg does not commute with ReLU
        layers.Conv2D(2, 1, activation="leaky_relu"),
        layers.MaxPool2D(1),
        layers.Activation("relu"),                  # an activation layer counts
        layers.MinPool2D(1),
        layers.Dense(2),                            # linear
        layers.MaxPool2D(1),
    ])
    assert model._relu_pool_pairs() == {4}


def test_layers_called_directly_still_apply_their_activation():
    model = _model("numpy", "float32", "max", "valid")
    x = RNG.standard_normal((2, 12, 12, 2)).astype(np.float32)
    model.predict(x)
    assert model.layers[0](x).min() >= 0
    np.testing.assert_array_equal(model.layers[0](x), np.maximum(model.layers[0].preactivation, 0))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_inference_applies_a_convolutions_relu_inside_it(backend_name, dtype):
    """predict and evaluate take the ReLU of a convolution that no pooling follows from the
    convolution itself: the outputs equal the layers' own forward passes bit for bit."""
    model = Sequential(seed=2, dtype=dtype, backend=backend_name, layers=[
        layers.Conv2D(4, 3, activation="relu", input_shape=(14, 14, 1)),  # expanded rows
        layers.Conv2D(8, 3, activation="relu"),  # few channels
        layers.Conv2D(20, 3, padding="same", activation="relu"),  # channel lanes
        layers.Flatten(),
        layers.Dense(3, activation="softmax"),
    ])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    x = RNG.standard_normal((5, 14, 14, 1)).astype(dtype)
    out = model.predict(x)
    assert all(layer.preactivation is None for layer in model.layers[:3])  # the fused path ran
    want = x
    for layer in model.layers:
        want = layer.forward(want)
    np.testing.assert_array_equal(out, want)
    assert all(layer.preactivation is not None for layer in model.layers[:3])
    model.train_on_batch(x, np.arange(5) % 3)  # training keeps the pre-activations again
    assert model.layers[0].preactivation is not None


def test_fused_relu_forward_needs_a_relu_layer():
    layer = layers.Conv2D(2, 3, activation="tanh")
    layer(np.zeros((1, 5, 5, 1), dtype=np.float32))
    with pytest.raises(ValueError, match="needs a ReLU activation"):
        layer.forward_fused_relu(np.zeros((1, 5, 5, 1), dtype=np.float32))
