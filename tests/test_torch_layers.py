"""cnnext layers, losses and optimizers against PyTorch (CPU, float64): outputs and gradients.

Layouts: cnnext is channels-last (``(N, H, W, C)``, kernels ``(KH, KW, C, F)``, Dense kernels
``(D, U)``); PyTorch is ``(N, C, H, W)``, ``(F, C, KH, KW)`` and ``(U, D)``. Each test transposes
at the boundary and compares with tight float64 tolerances.
"""
from __future__ import annotations

import math
import os

import numpy as np
import pytest

from cnnext import layers as L
from cnnext import losses, optimizers, schedules

if os.environ.get("CI") == "true":
    import torch  # CI installs torch: a missing torch must fail there, never skip
else:
    torch = pytest.importorskip("torch")
F = torch.nn.functional

RTOL = 1e-10


def close(actual, expected, rtol=RTOL) -> None:
    expected = expected.detach().numpy() if isinstance(expected, torch.Tensor) else expected
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


def nchw(x: np.ndarray) -> "torch.Tensor":
    return torch.tensor(np.ascontiguousarray(x.transpose(0, 3, 1, 2)), requires_grad=True)


def nhwc(t: "torch.Tensor") -> np.ndarray:
    return t.detach().numpy().transpose(0, 2, 3, 1)


def built(layer, x: np.ndarray):
    """``layer`` built for ``x`` in float64, its params randomised; returns the layer."""
    layer.dtype = np.dtype(np.float64)
    layer.build(x.shape[1:])
    rng = np.random.default_rng(7)
    layer.set_weights([rng.normal(size=w.shape) for w in layer.get_weights()])
    return layer


def tf_same_pads(n: int, k: int, s: int, d: int = 1) -> tuple[int, int]:
    """TensorFlow/Keras "same": ceil(n/s) outputs; the odd cell of padding goes after."""
    total = max((math.ceil(n / s) - 1) * s + d * (k - 1) + 1 - n, 0)
    return total // 2, total - total // 2


# ------------------------------------------------------------------------------------------ Conv2D
CONV_CASES = [  # kernel, strides, padding, dilation, input (N, H, W, C), filters
    ((3, 3), (1, 1), "valid", (1, 1), (2, 7, 6, 3), 4),
    ((3, 3), (1, 1), "same", (1, 1), (2, 7, 6, 3), 4),
    ((4, 2), (2, 1), "same", (1, 1), (2, 9, 6, 2), 3),  # asymmetric "same" padding
    ((3, 2), (2, 3), 1, (1, 1), (1, 8, 9, 2), 5),
    ((3, 3), (1, 1), (2, 1), (2, 2), (2, 9, 8, 3), 2),
    ((1, 1), (1, 1), "valid", (1, 1), (3, 4, 4, 6), 7),
]


@pytest.mark.parametrize("kernel, strides, padding, dilation, shape, filters", CONV_CASES)
def test_conv2d_matches_torch(kernel, strides, padding, dilation, shape, filters):
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape)
    layer = built(L.Conv2D(filters, kernel, strides=strides, padding=padding,
                           dilation_rate=dilation, activation="tanh"), x)
    y = layer.forward(x, training=True)

    xt = nchw(x)
    w = torch.tensor(layer.params["kernel"].transpose(3, 2, 0, 1).copy(), requires_grad=True)
    b = torch.tensor(layer.params["bias"], requires_grad=True)
    if padding == "same":
        (top, bottom), (left, right) = (tf_same_pads(shape[1], kernel[0], strides[0], dilation[0]),
                                        tf_same_pads(shape[2], kernel[1], strides[1], dilation[1]))
        padded, torch_padding = F.pad(xt, (left, right, top, bottom)), 0
    else:
        padded, torch_padding = xt, {"valid": 0}.get(padding, padding)
    yt = torch.tanh(F.conv2d(padded, w, b, stride=strides, padding=torch_padding, dilation=dilation))
    close(y, nhwc(yt))

    dy = rng.normal(size=y.shape)
    dx = layer.backward(dy)
    yt.backward(nchw(dy))
    close(dx, nhwc(xt.grad))
    close(layer.grads["kernel"], w.grad.numpy().transpose(2, 3, 1, 0))
    close(layer.grads["bias"], b.grad)


# ------------------------------------------------------------------------------------------ pooling
POOL_CASES = [  # layer, torch function of an NCHW tensor
    (lambda: L.MaxPool2D(2), lambda t: F.max_pool2d(t, 2)),
    (lambda: L.MaxPool2D(3, strides=2, padding=1), lambda t: F.max_pool2d(t, 3, 2, padding=1)),
    (lambda: L.MaxPool2D((2, 3), strides=1), lambda t: F.max_pool2d(t, (2, 3), 1)),
    (lambda: L.MinPool2D(2), lambda t: -F.max_pool2d(-t, 2)),
    (lambda: L.AvgPool2D(2), lambda t: F.avg_pool2d(t, 2)),
    (lambda: L.AvgPool2D(3, strides=2, padding=1),
     lambda t: F.avg_pool2d(t, 3, 2, padding=1, count_include_pad=False)),
    (lambda: L.Pool2D((3, 2), strides=(1, 2), kind="average"), lambda t: F.avg_pool2d(t, (3, 2), (1, 2))),
]


@pytest.mark.parametrize("case", range(len(POOL_CASES)))
def test_pooling_matches_torch(case):
    make_layer, torch_pool = POOL_CASES[case]
    rng = np.random.default_rng(case)
    x = rng.normal(size=(2, 7, 8, 3))  # continuous values: no ties for max/min
    layer = built(make_layer(), x)
    y = layer.forward(x, training=True)
    xt = nchw(x)
    yt = torch_pool(xt)
    close(y, nhwc(yt))
    dy = rng.normal(size=y.shape)
    yt.backward(nchw(dy))
    close(layer.backward(dy), nhwc(xt.grad))


def test_upsample_matches_torch_nearest():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 3, 4, 2))
    layer = built(L.UpSample2D((2, 3)), x)
    xt = nchw(x)
    yt = F.interpolate(xt, scale_factor=(2, 3), mode="nearest")
    close(layer.forward(x), nhwc(yt))
    dy = rng.normal(size=(2, 6, 12, 2))
    yt.backward(nchw(dy))
    close(layer.backward(dy), nhwc(xt.grad))


# ------------------------------------------------------------------------------------------ Dense
def test_dense_matches_torch():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(5, 7))
    layer = built(L.Dense(4, activation="sigmoid"), x)
    y = layer.forward(x, training=True)
    xt = torch.tensor(x, requires_grad=True)
    w = torch.tensor(layer.params["kernel"].T.copy(), requires_grad=True)
    b = torch.tensor(layer.params["bias"], requires_grad=True)
    yt = torch.sigmoid(F.linear(xt, w, b))
    close(y, yt)
    dy = rng.normal(size=y.shape)
    yt.backward(torch.tensor(dy))
    close(layer.backward(dy), xt.grad)
    close(layer.grads["kernel"], w.grad.numpy().T)
    close(layer.grads["bias"], b.grad)


# ------------------------------------------------------------------------------------------ BatchNorm
@pytest.mark.parametrize("shape", [(6, 4, 5, 3), (9, 5)], ids=["conv", "dense"])
def test_batchnorm_training_matches_torch(shape):
    """Batch statistics, gradients and the moving statistics. cnnext follows Keras: ``moving =
    m * moving + (1 - m) * batch`` with the biased batch variance; torch uses momentum ``1 - m``
    and tracks the unbiased variance, so its running_var is converted back with ``(n-1)/n``."""
    rng = np.random.default_rng(3)
    x = rng.normal(2.0, 3.0, size=shape)
    m, eps = 0.8, 1e-3
    layer = built(L.BatchNormalization(momentum=m, epsilon=eps), x)
    start_mean, start_var = layer.state["moving_mean"].copy(), np.abs(layer.state["moving_variance"])
    layer.state["moving_variance"][...] = start_var
    y = layer.forward(x, training=True)

    to_t = nchw if len(shape) == 4 else (lambda a: torch.tensor(a, requires_grad=True))
    from_t = nhwc if len(shape) == 4 else (lambda t: t.detach().numpy())
    xt = to_t(x)
    gamma = torch.tensor(layer.params["gamma"], requires_grad=True)
    beta = torch.tensor(layer.params["beta"], requires_grad=True)
    running_mean, running_var = torch.tensor(start_mean), torch.tensor(start_var)
    yt = F.batch_norm(xt, running_mean, running_var, gamma, beta, training=True,
                      momentum=1 - m, eps=eps)
    close(y, from_t(yt))

    dy = rng.normal(size=shape)
    yt.backward(to_t(dy))
    close(layer.backward(dy), from_t(xt.grad))
    close(layer.grads["gamma"], gamma.grad)
    close(layer.grads["beta"], beta.grad)

    n = x.size // shape[-1]
    close(layer.state["moving_mean"], running_mean)
    unbiased_batch_var = (running_var.numpy() - m * start_var) / (1 - m)
    close(layer.state["moving_variance"], m * start_var + (1 - m) * unbiased_batch_var * (n - 1) / n)


def test_batchnorm_inference_matches_torch():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(3, 4, 4, 5))
    layer = built(L.BatchNormalization(epsilon=1e-2), x)
    layer.state["moving_variance"][...] = np.abs(layer.state["moving_variance"]) + 0.1
    y = layer.forward(x, training=False)
    xt = nchw(x)
    gamma = torch.tensor(layer.params["gamma"], requires_grad=True)
    beta = torch.tensor(layer.params["beta"], requires_grad=True)
    yt = F.batch_norm(xt, torch.tensor(layer.state["moving_mean"]),
                      torch.tensor(layer.state["moving_variance"]), gamma, beta, training=False, eps=1e-2)
    close(y, nhwc(yt))
    dy = rng.normal(size=x.shape)
    yt.backward(nchw(dy))
    close(layer.backward(dy), nhwc(xt.grad))
    close(layer.grads["gamma"], gamma.grad)
    close(layer.grads["beta"], beta.grad)


# ------------------------------------------------------------------------------------------ Dropout
@pytest.mark.parametrize("rate", [0.1, 0.5, 0.8])
def test_dropout_statistics_match_torch(rate):
    """Same law as torch.nn.functional.dropout: zero fraction ~ rate, survivors scaled by
    1/(1 - rate), mean preserved, gradient through the same mask, identity in inference."""
    x = np.ones((40, 50, 50))  # 100,000 values
    layer = L.Dropout(rate, seed=0)
    layer.dtype = np.dtype(np.float64)
    layer.build(x.shape[1:])
    y = layer.forward(x, training=True)
    torch.manual_seed(0)
    yt = F.dropout(torch.tensor(x), p=rate, training=True).numpy()
    sigma = math.sqrt(rate * (1 - rate) / x.size)  # std of the zero fraction
    for out in (y, yt):
        assert abs(np.mean(out == 0) - rate) < 5 * sigma
        assert abs(out.mean() - 1.0) < 5 * sigma / (1 - rate)
        np.testing.assert_allclose(np.unique(out[out != 0]), [1 / (1 - rate)], rtol=1e-12)
    dy = np.random.default_rng(5).normal(size=x.shape)
    np.testing.assert_array_equal(layer.backward(dy), dy * y)
    assert layer.forward(x, training=False) is x


# ------------------------------------------------------------------------------------------ losses
def _probabilities(rng, n, k):
    e = np.exp(rng.normal(size=(n, k)))
    return e / e.sum(axis=1, keepdims=True)


def test_mse_matches_torch():
    rng = np.random.default_rng(6)
    t, p = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    pt = torch.tensor(p, requires_grad=True)
    value = F.mse_loss(pt, torch.tensor(t))
    value.backward()
    loss = losses.get("mse")
    close(loss.value(t, p), value)
    close(loss.gradient(t, p), pt.grad)


@pytest.mark.parametrize("labels", ["one_hot", "ids"])
def test_categorical_crossentropy_matches_torch(labels):
    rng = np.random.default_rng(7)
    ids = rng.integers(0, 4, 6)
    t = np.eye(4)[ids] if labels == "one_hot" else ids
    z = rng.normal(scale=3.0, size=(6, 4))
    z[0] = [300.0, -200.0, 0.0, 1.0]  # huge logits stay finite
    loss = losses.get("categorical_crossentropy")
    zt = torch.tensor(z, requires_grad=True)
    value = F.cross_entropy(zt, torch.tensor(ids))
    value.backward()
    fused_value, fused_grad = loss.logits_value_and_grad(t, z)
    close(fused_value, value)
    close(fused_grad, zt.grad)
    # on probabilities (no fusion): -sum(t log p) averaged over samples, and its gradient
    p = _probabilities(rng, 6, 4)
    pt = torch.tensor(p, requires_grad=True)
    value = -(torch.tensor(np.eye(4)[ids]) * torch.log(pt)).sum(dim=1).mean()
    value.backward()
    close(loss.value(t, p), value)
    close(loss.gradient(t, p), pt.grad)


def test_binary_crossentropy_matches_torch():
    rng = np.random.default_rng(8)
    t = rng.uniform(size=(7, 2))
    p = rng.uniform(0.02, 0.98, size=(7, 2))
    loss = losses.get("binary_crossentropy")
    pt = torch.tensor(p, requires_grad=True)
    value = F.binary_cross_entropy(pt, torch.tensor(t))
    value.backward()
    close(loss.value(t, p), value)
    close(loss.gradient(t, p), pt.grad)
    z = rng.normal(scale=4.0, size=(7, 2))
    z[0] = [80.0, -80.0]
    zt = torch.tensor(z, requires_grad=True)
    value = F.binary_cross_entropy_with_logits(zt, torch.tensor(t))
    value.backward()
    fused_value, fused_grad = loss.logits_value_and_grad(t, z)
    close(fused_value, value)
    close(fused_grad, zt.grad)


# ------------------------------------------------------------------------------------------ optimizers
OPTIMIZER_CASES = {  # id: (cnnext optimizer, torch optimizer factory, torch scheduler factory)
    "sgd": (lambda: optimizers.SGD(0.1), lambda p: torch.optim.SGD(p, lr=0.1), None),
    "sgd-momentum-decay": (lambda: optimizers.SGD(0.05, momentum=0.9, weight_decay=0.01),
                           lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=0.01), None),
    "sgd-nesterov": (lambda: optimizers.SGD(0.05, momentum=0.8, nesterov=True),
                     lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.8, nesterov=True), None),
    "adam": (lambda: optimizers.Adam(0.01), lambda p: torch.optim.Adam(p, lr=0.01), None),
    "adam-l2": (lambda: optimizers.Adam(0.01, beta_1=0.8, beta_2=0.95, epsilon=1e-6, weight_decay=0.1),
                lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1),
                None),
    "adamw": (lambda: optimizers.AdamW(0.01, weight_decay=0.1),
              lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1), None),
    "rmsprop": (lambda: optimizers.RMSprop(0.01),
                lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.9, eps=1e-8), None),
    "rmsprop-centered-momentum": (
        lambda: optimizers.RMSprop(0.01, rho=0.8, momentum=0.5, centered=True, weight_decay=0.05),
        lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.8, momentum=0.5, centered=True,
                                      weight_decay=0.05, eps=1e-8), None),
    "sgd-exponential-decay": (
        lambda: optimizers.SGD(schedules.ExponentialDecay(0.1, decay_steps=1, decay_rate=0.7),
                               momentum=0.9),
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
        lambda opt: torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.7)),
    "adam-step-decay": (
        lambda: optimizers.Adam(schedules.StepDecay(0.02, step_size=2, gamma=0.5)),
        lambda p: torch.optim.Adam(p, lr=0.02),
        lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)),
}


@pytest.mark.parametrize("case", sorted(OPTIMIZER_CASES))
def test_optimizer_steps_match_torch(case):
    make_ours, make_torch, make_scheduler = OPTIMIZER_CASES[case]
    rng = np.random.default_rng(9)
    params = {"conv.kernel": rng.normal(size=(3, 3, 2, 4)), "conv.bias": rng.normal(size=4)}
    tensors = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in params.items()}
    ours, theirs = make_ours(), make_torch(list(tensors.values()))
    scheduler = make_scheduler(theirs) if make_scheduler else None
    for _ in range(6):
        grads = {k: rng.normal(size=v.shape) for k, v in params.items()}
        ours.apply([(k, params[k], grads[k]) for k in params])
        for k, t in tensors.items():
            t.grad = torch.tensor(grads[k])
        theirs.step()
        if scheduler is not None:
            scheduler.step()
        for k in params:
            close(params[k], tensors[k], rtol=1e-12)
    assert ours.iterations == 6
