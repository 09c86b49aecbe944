"""Losses and metrics: values, gradients, fused logits forms, stability, label handling."""
from __future__ import annotations

import json

import numpy as np
import pytest

from cnnext import activations, losses, metrics

RNG = np.random.default_rng(5)


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_mse_value_and_gradient(numerical_grad):
    loss = losses.get("mse")
    p, t = RNG.standard_normal((4, 3)), RNG.standard_normal((4, 3))
    assert loss.value(t, p) == pytest.approx(np.mean((p - t) ** 2))
    np.testing.assert_allclose(loss.gradient(t, p), numerical_grad(lambda: loss.value(t, p), p),
                               rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name", ["categorical_crossentropy", "sparse_categorical_crossentropy"])
@pytest.mark.parametrize("labels", ["ids", "onehot"])
def test_crossentropy_probability_and_logits_forms(name, labels, numerical_grad):
    loss = losses.get(name)
    z = RNG.standard_normal((5, 4))
    ids = np.array([0, 3, 1, 1, 2])
    y = ids if labels == "ids" else np.eye(4)[ids]
    t = loss.prepare_targets(y, (4,), np.dtype("float64"))
    p = softmax(z)
    expected = -np.mean(np.log(p[np.arange(5), ids]))
    assert loss.value(t, p) == pytest.approx(expected, rel=1e-7)
    np.testing.assert_allclose(loss.gradient(t, p), numerical_grad(lambda: loss.value(t, p), p),
                               rtol=1e-5, atol=1e-8)
    value, dz = loss.logits_value_and_grad(t, z)
    assert value == pytest.approx(expected, rel=1e-10)
    np.testing.assert_allclose(dz, (p - np.eye(4)[ids]) / 5, rtol=1e-10, atol=1e-14)
    z_copy = z.copy()
    np.testing.assert_allclose(
        dz, numerical_grad(lambda: loss.logits_value_and_grad(t, z_copy)[0], z_copy),
        rtol=1e-5, atol=1e-9)
    # chain rule: the fused gradient equals softmax's backward of the unfused one
    chained = activations.get("softmax").backward(loss.gradient(t, p), z, p)
    np.testing.assert_allclose(chained, dz, rtol=1e-6, atol=1e-10)


def test_crossentropy_logits_form_is_stable_for_huge_logits():
    loss = losses.get("sparse_categorical_crossentropy")
    z = np.array([[1000.0, 0.0, -1000.0], [5e4, 5e4, -5e4]], dtype=np.float32)
    value, dz = loss.logits_value_and_grad(np.array([2, 0]), z)
    assert value == pytest.approx((2000.0 + np.log(2)) / 2, rel=1e-5)
    np.testing.assert_allclose(dz, [[0.5, 0, -0.5], [-0.25, 0.25, 0]], atol=1e-6)
    assert dz.dtype == np.float32
    # clipping keeps the probability form finite too
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        assert np.isfinite(loss.value(np.array([2, 0]), softmax(z.astype(np.float64))))


def test_soft_labels_are_accepted():
    loss = losses.get("categorical_crossentropy")
    y = np.array([[0.2, 0.8], [0.5, 0.5]])
    z = RNG.standard_normal((2, 2))
    t = loss.prepare_targets(y, (2,), np.dtype("float64"))
    expected = -np.mean(np.sum(y * np.log(softmax(z)), axis=1))
    assert loss.logits_value_and_grad(t, z)[0] == pytest.approx(expected)


def test_smoothed_float32_labels_are_accepted():
    k, smoothing = 10, 0.1
    y = np.full((5, k), smoothing / k, np.float32)
    y[np.arange(5), [0, 3, 9, 2, 2]] += np.float32(1 - smoothing)
    t = losses.get("categorical_crossentropy").prepare_targets(y, (k,), np.dtype("float32"))
    np.testing.assert_array_equal(t, y)


@pytest.mark.parametrize("y, output_shape, problem", [
    (np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]), (3,), r"row y\[1\] sums to 2"),
    (np.array([[0.5, 0.25, 0.0]]), (3,), r"row y\[0\] sums to 0.75"),
    (np.array([[1.5, -0.5, 0.0]]), (3,), r"row y\[0\] has negative values"),
    (np.array([[[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [1.0, 1.0]]]]), (2, 2, 2),
     r"row y\[0, 1, 1\] sums to 2"),
], ids=["multi-hot", "scaled", "negative", "per-pixel"])
def test_categorical_targets_must_be_probability_rows(y, output_shape, problem):
    """The fused gradient (p - t) / M is the loss gradient only for rows summing to 1."""
    loss = losses.get("categorical_crossentropy")
    with pytest.raises(ValueError, match="categorical_crossentropy targets must be probability "
                                         r"rows .*" + problem):
        loss.prepare_targets(y, output_shape, np.dtype("float64"))


@pytest.mark.parametrize("shape", [(6, 1), (3, 4)])
def test_binary_crossentropy_forms(shape, numerical_grad):
    loss = losses.get("binary_crossentropy")
    z = RNG.standard_normal(shape) * 3
    t = (RNG.random(shape) > 0.5).astype(float)
    p = 1 / (1 + np.exp(-z))
    expected = -np.mean(t * np.log(p) + (1 - t) * np.log(1 - p))
    assert loss.value(t, p) == pytest.approx(expected, rel=1e-7)
    np.testing.assert_allclose(loss.gradient(t, p), numerical_grad(lambda: loss.value(t, p), p),
                               rtol=1e-5, atol=1e-8)
    value, dz = loss.logits_value_and_grad(t, z)
    assert value == pytest.approx(expected, rel=1e-10)
    np.testing.assert_allclose(dz, (p - t) / t.size, rtol=1e-10, atol=1e-14)
    big = np.array([[800.0], [-800.0]])
    value, dz = loss.logits_value_and_grad(np.array([[0.0], [0.0]]), big)
    assert value == pytest.approx(400.0) and np.isfinite(dz).all()


def test_from_logits_value_uses_logits():
    loss = losses.CategoricalCrossentropy(from_logits=True)
    z = RNG.standard_normal((3, 4))
    assert loss.value(np.array([1, 2, 3]), z) == pytest.approx(
        -np.mean(np.log(softmax(z)[np.arange(3), [1, 2, 3]])))
    with pytest.raises(ValueError, match="from_logits"):
        losses.MeanSquaredError(from_logits=True)
    with pytest.raises(TypeError, match="from_logits must be True or False"):
        losses.BinaryCrossentropy(from_logits="true")


def test_targets_preparation():
    cce = losses.get("categorical_crossentropy")
    f32 = np.dtype("float32")
    ids = cce.prepare_targets(np.array([[1.0], [0.0], [2.0]]), (3,), f32)
    assert ids.dtype == np.intp and ids.tolist() == [1, 0, 2]
    onehot = cce.prepare_targets(np.eye(3, dtype=np.int64), (3,), f32)
    assert onehot.dtype == f32 and onehot.shape == (3, 3)
    mse = losses.get("mse")
    assert mse.prepare_targets(np.array([1, 2]), (1,), f32).shape == (2, 1)
    with pytest.raises(ValueError, match="NaN"):
        mse.prepare_targets(np.array([[np.nan]]), (1,), f32)


def test_registry_and_serialisation():
    for name in ("mse", "mean_squared_error", "cce", "categorical_crossentropy",
                 "sparse_categorical_crossentropy", "bce", "binary_crossentropy"):
        loss = losses.get(name)
        clone = losses.get(json.loads(json.dumps(losses.serialize(loss))))
        assert type(clone) is type(loss) and clone.get_config() == loss.get_config()
    clone = losses.get(losses.serialize(losses.BinaryCrossentropy(from_logits=True)))
    assert clone.from_logits
    with pytest.raises(ValueError, match="unknown loss"):
        losses.get("huber")
    with pytest.raises(ValueError, match="unknown loss class"):
        losses.get({"class_name": "Huber"})


def test_accuracy_metric_label_forms():
    acc = metrics.get("accuracy")
    p = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    assert acc(np.array([1, 0, 0, 0]), p) == 0.75
    assert acc(np.eye(2)[[1, 0, 0, 0]], p) == 0.75
    binary = np.array([[0.9], [0.2], [0.6], [0.4]])
    assert acc(np.array([[1.0], [0.0], [0.0], [0.0]]), binary) == 0.75
    logits_acc = metrics.Accuracy(threshold=0.0)
    assert logits_acc(np.array([[1.0], [0.0]]), np.array([[0.3], [-2.0]])) == 1.0


def test_mse_metric_and_registry():
    mse = metrics.get("mse")
    p = np.array([[0.5, 0.5], [1.0, 0.0]])
    assert mse(np.array([0, 0]), p) == pytest.approx((0.25 + 0.25 + 0 + 0) / 4)
    assert mse(np.array([[1.0, 0.0], [1.0, 0.0]]), p) == pytest.approx(0.125)
    assert isinstance(metrics.get("acc"), metrics.Accuracy)
    with pytest.raises(ValueError, match="unknown metric 'auc'"):
        metrics.get("auc")


@pytest.mark.parametrize("name", ["relu", "leaky_relu", "sigmoid", "tanh", "softmax", "linear"])
def test_activation_backward_matches_finite_differences(name, numerical_grad):
    act = activations.get(name)
    z = RNG.standard_normal((3, 4))
    r = RNG.standard_normal((3, 4))
    y = act.forward(z)
    dz = act.backward(r, z, y)
    np.testing.assert_allclose(dz, numerical_grad(lambda: float(np.sum(act.forward(z) * r)), z),
                               rtol=1e-6, atol=1e-9)


def test_relu_derivative_uses_the_input_and_sigmoid_is_stable():
    relu = activations.get("relu")
    z = np.array([-1.0, 0.0, 2.0])
    np.testing.assert_array_equal(relu.backward(np.ones(3), z, relu.forward(z)), [0, 0, 1])
    sigmoid = activations.get("sigmoid")
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        y = sigmoid.forward(np.array([-1000.0, 0.0, 1000.0], dtype=np.float32))
        s = activations.get("softmax").forward(np.array([[1e4, 0.0], [-1e4, 1e4]]))
    np.testing.assert_allclose(y, [0.0, 0.5, 1.0])
    assert y.dtype == np.float32
    np.testing.assert_allclose(s, [[1.0, 0.0], [0.0, 1.0]])
    leaky = activations.get({"name": "leaky_relu", "alpha": 0.2})
    assert leaky.get_config() == {"name": "leaky_relu", "alpha": 0.2}
    with pytest.raises(ValueError, match="unknown activation 'gelu'"):
        activations.get("gelu")


@pytest.mark.parametrize("name, activation, labels", [
    ("sparse_categorical_crossentropy", "softmax", "ids"),
    ("categorical_crossentropy", "softmax", "onehot"),
    ("binary_crossentropy", "sigmoid", "binary"),
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_output_is_the_activation_bit_for_bit(name, activation, labels, dtype, backend_name):
    """A training step takes the model output from the loss: it must be exactly what the
    activation layer computes on the same backend (with rows of very large logits too)."""
    loss = losses.get(name)
    k = 1 if labels == "binary" else 4
    z = (RNG.standard_normal((6, k)) * 30).astype(dtype)
    z[0] = 1e4
    ids = np.array([0, 3, 1, 1, 2, 0]) % max(k, 2)
    y = {"ids": ids, "onehot": np.eye(4)[ids], "binary": ids.reshape(-1, 1) % 2}[labels]
    t = loss.prepare_targets(y, (k,), np.dtype(dtype))
    value, dz, out = loss.logits_value_grad_and_output(t, z, backend_name)
    np.testing.assert_array_equal(out, activations.get(activation).forward(z, backend_name))
    assert out.dtype == dz.dtype == dtype and np.isfinite(value)
    value_np, dz_np, _ = loss.logits_value_grad_and_output(t, z, "numpy")
    assert value == pytest.approx(value_np, rel=1e-5)
    np.testing.assert_allclose(dz, dz_np, rtol=1e-5, atol=1e-7)


def test_fused_training_step_returns_the_activated_output(backend_name):
    from cnnext import Sequential, layers

    model = Sequential([layers.Dense(5, input_shape=(3,)), layers.Dense(4, activation="softmax")],
                       seed=1, backend=backend_name)
    model.compile("sgd", "sparse_categorical_crossentropy")
    x = RNG.standard_normal((8, 3)).astype(np.float32)
    _, out = model._train_step(x, np.arange(8) % 4, model._loss_mode())
    last = model.layers[-1]
    np.testing.assert_array_equal(out, last.activation.forward(last.preactivation, backend_name))


@pytest.mark.parametrize("name", ["relu", "softmax"])
def test_kernel_activations_write_into_any_out_layout(name, backend_name):
    """The compiled ops write only into C-contiguous arrays; a transposed ``out`` must still
    receive the result (it once kept zeros for ReLU)."""
    act = activations.get(name)
    z = RNG.standard_normal((4, 6)).astype(np.float32)
    dy = RNG.standard_normal((4, 6)).astype(np.float32)
    out = np.zeros((6, 4), np.float32).T
    assert act.forward(z, backend_name, out) is out
    np.testing.assert_allclose(out, act.forward(z, "numpy"), rtol=1e-6)
    y = act.forward(z, "numpy")
    grad = np.zeros((6, 4), np.float32).T
    assert act.backward(dy, z, y, backend_name, grad) is grad
    np.testing.assert_allclose(grad, act.backward(dy, z, y, "numpy"), rtol=1e-6, atol=1e-7)
