"""Sequential: whole-model gradient checks, training, reproducibility, backends, dtypes."""
from __future__ import annotations

import json

import numpy as np
import pytest

from cnnext import Sequential
from cnnext import layers as L

RNG = np.random.default_rng(99)


def every_layer_model(backend: str, dtype: str = "float64", head: str = "softmax") -> Sequential:
    """A small model that contains every layer type (and every pooling kind)."""
    return Sequential([
        L.Conv2D(2, 3, padding="same", activation="relu", input_shape=(8, 8, 2)),
        L.MaxPool2D(2),
        L.UpSample2D(2),
        L.Conv2D(3, 3, strides=2, activation="tanh"),
        L.BatchNormalization(),
        L.MinPool2D(2, strides=1, padding="same"),
        L.AvgPool2D(2, strides=1),
        L.Dropout(0.3, seed=11),
        L.Flatten(),
        L.Dense(6, activation="sigmoid"),
        L.Activation("leaky_relu", alpha=0.1),
        L.Dense(3 if head == "softmax" else 1, activation=head),
    ], dtype=dtype, seed=3, backend=backend)


def model_loss_gradcheck(model: Sequential, x: np.ndarray, t: np.ndarray, numerical_grad) -> None:
    """Analytic gradients of the training loss equal central differences for every parameter."""
    dropouts = [layer for layer in model.layers if isinstance(layer, L.Dropout)]
    mode = model._loss_mode()

    def loss() -> float:
        for layer in dropouts:
            layer.rng = np.random.default_rng(layer.seed)
        return model._batch_loss(t, model._forward(x, True), mode, need_grad=False)[0]

    loss()
    for layer in dropouts:
        layer.rng = np.random.default_rng(layer.seed)
    out = model._forward(x, True)
    _, grad = model._batch_loss(t, out, mode, need_grad=True)
    model._backward(grad, mode)
    checked = 0
    for layer in model.layers:
        for key, param in layer.params.items():
            analytic = layer.grads[key].copy()
            np.testing.assert_allclose(analytic, numerical_grad(loss, param), rtol=2e-5,
                                       atol=1e-8, err_msg=f"{layer.name}.{key}")
            checked += 1
    assert checked == 10  # kernel and bias of 2 Conv2D and 2 Dense, gamma and beta


@pytest.mark.parametrize("loss, head, labels, backend", [
    ("sparse_categorical_crossentropy", "softmax", "ids", "numpy"),
    ("sparse_categorical_crossentropy", "softmax", "ids", "cython"),
    ("categorical_crossentropy", "softmax", "onehot", "numpy"),
    ("mse", "softmax", "onehot", "numpy"),
    ("binary_crossentropy", "sigmoid", "binary", "numpy"),
])
def test_whole_model_gradients_every_layer(loss, head, labels, backend, request, numerical_grad):
    if backend == "cython":
        request.getfixturevalue("compiled_backend")  # skips locally / fails in CI when missing
    model = every_layer_model(backend, head=head)
    model.compile("sgd", loss)
    x = RNG.standard_normal((4, 8, 8, 2))
    ids = np.array([0, 2, 1, 2])
    y = {"ids": ids, "onehot": np.eye(3)[ids], "binary": np.array([0, 1, 1, 0])}[labels]
    t = model.loss.prepare_targets(y, model.output_shape, model.dtype)
    assert model._loss_mode() == ("plain" if loss == "mse" else "fused")
    model_loss_gradcheck(model, x, t, numerical_grad)


@pytest.mark.parametrize("loss", ["categorical_crossentropy", "binary_crossentropy"])
def test_whole_model_gradients_from_logits(loss, numerical_grad):
    from cnnext import losses

    units = 3 if loss == "categorical_crossentropy" else 1
    model = Sequential([L.Conv2D(2, 3, activation="relu", input_shape=(5, 5, 1)), L.Flatten(),
                        L.Dense(units)], dtype="float64", seed=1, backend="numpy")
    model.compile("sgd", losses.get(loss).__class__(from_logits=True))
    assert model._loss_mode() == "logits"
    y = np.array([0, 2, 1]) if units == 3 else np.array([1.0, 0.0, 1.0])
    x = RNG.standard_normal((3, 5, 5, 1))
    t = model.loss.prepare_targets(y, model.output_shape, model.dtype)
    mode = model._loss_mode()
    loss_fn = lambda: model._batch_loss(t, model._forward(x, True), mode, False)[0]  # noqa: E731
    _, grad = model._batch_loss(t, model._forward(x, True), mode, True)
    model._backward(grad, mode)
    for layer in (model.layers[0], model.layers[2]):
        for key, param in layer.params.items():
            np.testing.assert_allclose(layer.grads[key].copy(), numerical_grad(loss_fn, param),
                                       rtol=2e-5, atol=1e-8)


def toy_data(n: int = 48, seed: int = 0):
    """Images whose class is the quadrant holding the bright blob (learnable in a few steps)."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, 8, 8, 1)).astype(np.float32) * 0.2
    y = rng.integers(0, 4, n)
    for i, c in enumerate(y):
        r, col = divmod(int(c), 2)
        x[i, 4 * r:4 * r + 4, 4 * col:4 * col + 4, 0] += 1.0
    return x, y


def small_cnn(seed: int = 0, backend="numpy", dtype: str = "float32", dropout: float = 0.2):
    return Sequential([
        L.Conv2D(4, 3, padding="same", activation="relu", input_shape=(8, 8, 1)),
        L.MaxPool2D(2),
        L.BatchNormalization(),
        L.Dropout(dropout),
        L.Flatten(),
        L.Dense(4, activation="softmax"),
    ], seed=seed, backend=backend, dtype=dtype)


def test_fit_learns_and_reports_history():
    x, y = toy_data()
    model = small_cnn()
    model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    before = model.evaluate(x, y, return_dict=True)
    history = model.fit(x, y, epochs=8, batch_size=8, validation_split=0.25, verbose=0)
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert history.epoch == list(range(8)) and model.history is history
    assert history.history["loss"][-1] < history.history["loss"][0]
    after = model.evaluate(x, y, return_dict=True)
    assert after["loss"] < before["loss"] and after["accuracy"] > 0.8


def test_same_seed_same_weights_and_loss_curve():
    x, y = toy_data()
    runs = []
    for _ in range(2):
        model = small_cnn(seed=7)
        initial = model.get_weights()
        model.compile("sgd", "categorical_crossentropy", ["accuracy"])
        history = model.fit(x, np.eye(4)[y], epochs=3, batch_size=16, verbose=0)
        runs.append((initial, history.history, model.get_weights()))
    (w0a, ha, wa), (w0b, hb, wb) = runs
    for a, b in zip(w0a + wa, w0b + wb):
        np.testing.assert_array_equal(a, b)
    assert ha == hb
    other = small_cnn(seed=8).get_weights()
    assert not np.array_equal(other[0], w0a[0])


def test_int_and_onehot_labels_train_identically():
    x, y = toy_data()
    results = []
    for labels, loss in ((y, "sparse_categorical_crossentropy"),
                         (np.eye(4)[y], "categorical_crossentropy"),
                         (y[:, None], "categorical_crossentropy")):
        model = small_cnn(seed=2)
        model.compile("sgd", loss, ["accuracy"])
        results.append(model.fit(x, labels, epochs=2, batch_size=16, verbose=0).history)
    for other in results[1:]:
        np.testing.assert_allclose(other["loss"], results[0]["loss"], rtol=1e-6)
        assert other["accuracy"] == results[0]["accuracy"]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_backends_train_to_the_same_weights(dtype, compiled_backend):
    x, y = toy_data(32)
    weights = []
    for backend in ("numpy", compiled_backend):
        model = Sequential([
            L.Conv2D(3, 3, padding="same", activation="relu", input_shape=(8, 8, 1)),
            L.MaxPool2D(2), L.Conv2D(4, 2, strides=1, activation="relu"), L.AvgPool2D(2),
            L.UpSample2D(2), L.MinPool2D(2, padding="same"), L.Flatten(),
            L.Dense(4, activation="softmax"),
        ], seed=5, backend=backend, dtype=dtype)
        model.compile("adam", "sparse_categorical_crossentropy")
        model.fit(x, y, epochs=2, batch_size=8, verbose=0)
        weights.append(model.get_weights())
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == "float32" else dict(rtol=1e-9, atol=1e-11)
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, **tol)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtype_is_kept_everywhere(dtype):
    x, y = toy_data(16)
    model = small_cnn(dtype=dtype)
    model.compile("adamw", "sparse_categorical_crossentropy")
    model.fit(x.astype(np.float64), y, epochs=1, batch_size=8, verbose=0)
    for layer in model.layers:
        for array in (*layer.params.values(), *layer.state.values(), *layer.grads.values()):
            assert array.dtype == dtype
    for array in model.optimizer.get_state().values():
        assert array.dtype in (np.dtype(dtype), np.int64)
    assert model.predict(x).dtype == dtype


def test_uint8_inputs_are_scaled_by_1_over_255():
    model = small_cnn()
    images = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 1), dtype=np.uint8)
    np.testing.assert_allclose(model.predict(images), model.predict(images / 255.0), rtol=1e-5)


def test_predict_evaluate_train_on_batch_outputs():
    x, y = toy_data(10)
    model = small_cnn()
    model.compile("sgd", "sparse_categorical_crossentropy", ["accuracy", "mse", "loss"])
    out = model.predict(x, batch_size=3)
    assert out.shape == (10, 4) and np.allclose(out.sum(axis=1), 1, atol=1e-6)
    np.testing.assert_allclose(model(x), out, rtol=1e-6)
    result = model.evaluate(x, y, batch_size=4)
    assert isinstance(result, list) and len(result) == 3
    as_dict = model.evaluate(x, y, batch_size=7, return_dict=True)
    assert list(as_dict) == ["loss", "accuracy", "mse"]
    np.testing.assert_allclose(list(as_dict.values()), result, rtol=1e-5)
    expected_acc = np.mean(out.argmax(axis=1) == y)
    assert as_dict["accuracy"] == pytest.approx(expected_acc)
    expected_loss = -np.mean(np.log(out[np.arange(10), y]))
    assert as_dict["loss"] == pytest.approx(expected_loss, rel=1e-4)
    before = model.get_weights()
    step = model.train_on_batch(x, y, return_dict=True)
    assert set(step) == {"loss", "accuracy", "mse"}
    assert not np.array_equal(before[0], model.get_weights()[0])
    model.compile("sgd", "sparse_categorical_crossentropy")
    assert isinstance(model.evaluate(x, y), float)


def test_frozen_layers_get_no_updates():
    x, y = toy_data(16)
    model = small_cnn()
    model.layers[0].trainable = False
    model.layers[2].trainable = False  # BatchNormalization: frozen, runs in inference mode
    frozen = [model.layers[0].get_weights(), model.layers[2].get_weights()]
    dense_before = model.layers[-1].get_weights()
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    for a, b in zip(frozen[0], model.layers[0].get_weights()):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(frozen[1], model.layers[2].get_weights()):  # moving statistics too
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(dense_before[0], model.layers[-1].get_weights()[0])
    assert model.count_params() == (64 * 4 + 4, 40 + 8 + 8)


def test_summary_table(capsys):
    model = small_cnn()
    model.summary()
    text = capsys.readouterr().out
    for expected in ("conv2d (Conv2D)", "(None, 8, 8, 4)", "max_pool2d (MaxPool2D)",
                     "(None, 64)", "dense (Dense)", "Total params: 316",
                     "Trainable params: 308", "Non-trainable params: 8"):
        assert expected in text, expected


def test_auto_names_are_unique_and_explicit_duplicates_fail():
    model = Sequential([L.Dense(2, input_shape=(3,)), L.Dense(2), L.Dense(2)])
    assert [layer.name for layer in model.layers] == ["dense", "dense_1", "dense_2"]
    with pytest.raises(ValueError, match="already has a layer named 'dense_1'"):
        model.add(L.Dense(2, name="dense_1"))


class NameCountingFlatten(L.Flatten):
    """A Flatten that counts how often any instance's name is read."""

    reads = 0

    @property
    def name(self) -> str:
        NameCountingFlatten.reads += 1
        return self._name

    @name.setter
    def name(self, value: str) -> None:
        self._name = value


def test_adding_a_layer_does_not_scan_the_earlier_ones():
    model = Sequential([L.Flatten(input_shape=(2,))])
    NameCountingFlatten.reads = 0
    for _ in range(300):
        model.add(NameCountingFlatten())
    assert NameCountingFlatten.reads < 10 * 300  # a scan per add would be ~45,000
    assert model.layers[-1].name == "name_counting_flatten_299"
    assert len({layer.name for layer in model.layers}) == 301


def test_auto_names_skip_explicitly_taken_ones_and_same_layer_twice_fails():
    model = Sequential([L.Dense(2, input_shape=(3,)), L.Dense(2, name="dense_1"), L.Dense(2)])
    assert [layer.name for layer in model.layers] == ["dense", "dense_1", "dense_2"]
    with pytest.raises(ValueError, match="layer 'dense_2' is already in model 'sequential'"):
        model.add(model.layers[-1])


def test_failed_lazy_build_leaves_the_model_buildable():
    def make():
        return Sequential([L.Conv2D(4, 3), L.MaxPool2D(2), L.Conv2D(8, 3), L.Flatten(),
                           L.Dense(10)], seed=0)

    model = make()
    with pytest.raises(ValueError, match="larger than its padded input"):
        model.predict(np.zeros((1, 6, 6, 1), np.float32))  # too small for the second conv
    assert not model.built
    assert not any(layer.built or layer.params for layer in model.layers)
    x = RNG.standard_normal((2, 12, 12, 1)).astype(np.float32)
    np.testing.assert_array_equal(model.predict(x), make().predict(x))


def test_failed_build_keeps_layers_that_were_built_before():
    dense = L.Dense(3)
    dense(np.ones((1, 4), np.float32))
    kernel = dense.params["kernel"].copy()
    model = Sequential([dense, L.Conv2D(2, 3)])
    with pytest.raises(ValueError, match=r"\(H, W, C\)"):
        model.build((4,))
    assert dense.built and not model.layers[1].built
    np.testing.assert_array_equal(dense.params["kernel"], kernel)


def test_weight_specs_describe_what_build_allocates():
    model = every_layer_model("numpy")
    config = model.get_config()
    specs = Sequential.from_config(config, build=False).weight_specs(config["input_shape"])
    for layer, layer_specs in zip(model.layers, specs):
        for kind in ("params", "state"):
            built = getattr(layer, kind)
            assert list(layer_specs[kind]) == list(built)
            assert all(spec.shape == built[key].shape for key, spec in layer_specs[kind].items())
    with pytest.raises(ValueError, match="already built"):
        model.weight_specs((8, 8, 2))


def test_compile_leaves_the_callers_metric_objects_unchanged():
    from cnnext import losses, metrics

    x = RNG.standard_normal((40, 5))
    y = (RNG.random(40) < 0.5).astype(int)
    accuracy = metrics.Accuracy()
    logits = Sequential([L.Dense(1, input_shape=(5,))], seed=1)
    logits.compile("sgd", losses.BinaryCrossentropy(from_logits=True), [accuracy])
    assert accuracy.threshold == 0.5 and logits.metrics[0].threshold == 0.0
    probabilities = Sequential([L.Dense(1, activation="sigmoid", input_shape=(5,))], seed=1)
    probabilities.compile("sgd", "binary_crossentropy", [accuracy])
    p = probabilities.predict(x)
    expected = np.mean((p[:, 0] > 0.5) == (y > 0.5))
    assert probabilities.evaluate(x, y, return_dict=True)["accuracy"] == pytest.approx(expected)
    z = logits.predict(x)
    assert logits.evaluate(x, y, return_dict=True)["accuracy"] == pytest.approx(
        np.mean((z[:, 0] > 0) == (y > 0.5)))


def test_build_from_first_batch_and_config_round_trip():
    model = Sequential([L.Conv2D(2, 3), L.Flatten(), L.Dense(3, activation="softmax")], seed=1)
    assert not model.built
    x = RNG.standard_normal((2, 6, 6, 1)).astype(np.float32)
    out = model.predict(x)
    assert model.built and model.input_shape == (6, 6, 1)
    config = json.loads(json.dumps(model.get_config()))
    assert config["input_shape"] == [6, 6, 1] and config["dtype"] == "float32"
    clone = Sequential.from_config(config)
    clone.set_weights(model.get_weights())
    np.testing.assert_array_equal(clone.predict(x), out)
    model.compile("adam", "categorical_crossentropy", ["accuracy"])
    clone.compile_from_config(json.loads(json.dumps(model.compile_config())))
    assert clone.compile_config() == model.compile_config()


def test_add_to_built_model_validates_shape():
    model = Sequential([L.Conv2D(2, 3, input_shape=(4, 4, 1))])
    with pytest.raises(ValueError, match="'big'.*larger than"):
        model.add(L.Conv2D(2, 3, name="big"))
    assert len(model.layers) == 1
    empty = Sequential()
    with pytest.raises(ValueError, match="larger than"):
        empty.add(L.Conv2D(2, 5, input_shape=(4, 4, 1)))
    assert empty.layers == [] and not empty.built


def test_softmax_cross_entropy_is_stable_for_huge_logits():
    model = Sequential([L.Dense(3, activation="softmax", input_shape=(2,))], seed=0)
    model.layers[0].set_weights([np.array([[1e4, -1e4, 0.0], [0.0, 0.0, 0.0]]), np.zeros(3)])
    model.compile("sgd", "sparse_categorical_crossentropy")
    x = np.array([[1.0, 0.0], [1.0, 0.0]])
    loss = model.evaluate(x, np.array([1, 0]))
    assert np.isfinite(loss) and loss == pytest.approx(1e4, rel=1e-3)  # mean of 2e4 and 0
    model.train_on_batch(x, np.array([1, 0]))
    assert all(np.isfinite(w).all() for w in model.get_weights())


def test_backend_choice_reaches_every_layer(compiled_backend):
    import cnnext

    model = small_cnn(backend=None)
    x, _ = toy_data(4)
    calls = []
    table = cnnext.backend.BACKENDS["numpy"]
    original = table.conv2d_forward
    table.conv2d_forward = lambda *args: calls.append(1) or original(*args)
    try:
        with cnnext.use_backend("numpy"):  # a model without a pinned backend follows the default
            expected = model.predict(x)
        assert calls == [1]
        model.backend = compiled_backend
        assert {layer.backend for layer in model.layers} == {compiled_backend}
        with cnnext.use_backend("numpy"):
            np.testing.assert_allclose(model.predict(x), expected, rtol=1e-4, atol=1e-6)
        assert calls == [1]  # the pinned backend ignored the default
    finally:
        table.conv2d_forward = original


def test_first_layer_with_weights_skips_its_input_gradient():
    """Nothing upstream of the first layer with weights needs its input gradient: the model
    marks it so the convolution skips computing dx; every later layer still provides one."""
    model = Sequential([L.MaxPool2D(1, input_shape=(6, 6, 1)), L.Conv2D(2, 3), L.Conv2D(2, 3),
                        L.Flatten(), L.Dense(2)], seed=0)
    model.compile("sgd", "mse")
    model.train_on_batch(np.ones((2, 6, 6, 1), dtype=np.float32), np.zeros((2, 2)))
    assert [layer.input_grad_needed for layer in model.layers] == [False, False, True, True, True]
    assert model.layers[1].affine_backward(np.ones((2, 4, 4, 2), dtype=np.float32)) is None
