"""Optimizers and schedules: update rules over several steps, state/config round trips, and
loss falling on a tiny problem."""
from __future__ import annotations

import copy
import gc
import json
import math
import pickle

import numpy as np
import pytest

import cnnext
from cnnext import Sequential, optimizers, schedules
from cnnext import layers as L


def reference_steps(kind: str, hp: dict, p: np.ndarray, grads: list) -> np.ndarray:
    """The torch.optim algorithms as written in their documentation, one parameter, float64."""
    p = p.copy()
    lr, wd = hp.get("learning_rate"), hp.get("weight_decay", 0.0)
    b = m = v = g_avg = None
    for t, g in enumerate(grads, start=1):
        lr_t = lr(t - 1) if callable(lr) else lr
        if kind == "AdamW":
            p = p * (1 - lr_t * wd)
        elif wd:
            g = g + wd * p
        if kind == "SGD":
            mu = hp.get("momentum", 0.0)
            if mu:
                b = g.copy() if b is None else mu * b + g
                g = g + mu * b if hp.get("nesterov") else b
            p = p - lr_t * g
        elif kind in ("Adam", "AdamW"):
            b1, b2, eps = hp.get("beta_1", 0.9), hp.get("beta_2", 0.999), hp.get("epsilon", 1e-8)
            m = (1 - b1) * g if m is None else b1 * m + (1 - b1) * g
            v = (1 - b2) * g * g if v is None else b2 * v + (1 - b2) * g * g
            m_hat, v_hat = m / (1 - b1 ** t), v / (1 - b2 ** t)
            p = p - lr_t * m_hat / (np.sqrt(v_hat) + eps)
        else:  # RMSprop
            alpha, mu, eps = hp.get("rho", 0.9), hp.get("momentum", 0.0), hp.get("epsilon", 1e-8)
            v = (1 - alpha) * g * g if v is None else alpha * v + (1 - alpha) * g * g
            denom = v
            if hp.get("centered"):
                g_avg = (1 - alpha) * g if g_avg is None else alpha * g_avg + (1 - alpha) * g
                denom = v - g_avg ** 2
            if mu:
                b = g / (np.sqrt(denom) + eps) if b is None else mu * b + g / (np.sqrt(denom) + eps)
                p = p - lr_t * b
            else:
                p = p - lr_t * g / (np.sqrt(denom) + eps)
    return p


CASES = [
    ("SGD", {"learning_rate": 0.1}),
    ("SGD", {"learning_rate": 0.05, "momentum": 0.9}),
    ("SGD", {"learning_rate": 0.05, "momentum": 0.8, "nesterov": True, "weight_decay": 0.01}),
    ("Adam", {"learning_rate": 0.01}),
    ("Adam", {"learning_rate": 0.02, "beta_1": 0.8, "beta_2": 0.99, "epsilon": 1e-6,
              "weight_decay": 0.1}),
    ("AdamW", {"learning_rate": 0.01, "weight_decay": 0.1}),
    ("RMSprop", {"learning_rate": 0.01}),
    ("RMSprop", {"learning_rate": 0.01, "rho": 0.95, "momentum": 0.5, "centered": True,
                 "weight_decay": 0.05}),
    ("Adam", {"learning_rate": schedules.ExponentialDecay(0.05, decay_steps=2, decay_rate=0.5)}),
    ("SGD", {"learning_rate": schedules.CosineDecay(0.1, decay_steps=4), "momentum": 0.9}),
]


@pytest.mark.parametrize("kind, hp", CASES, ids=[f"{k}-{i}" for i, (k, _) in enumerate(CASES)])
def test_update_rule_matches_reference(kind, hp, backend_name):
    rng = np.random.default_rng(0)
    p0 = rng.standard_normal((3, 4))
    grads = [rng.standard_normal((3, 4)) for _ in range(6)]
    opt = getattr(optimizers, kind)(**hp)
    p = p0.copy()
    for g in grads:
        opt.apply([("w", p, g)], backend_name)
    np.testing.assert_allclose(p, reference_steps(kind, hp, p0, grads), rtol=1e-12, atol=1e-14)
    assert opt.iterations == 6


def run_updates(kind: str, hp: dict, backend: str, param: np.ndarray,
                grads: list) -> tuple[np.ndarray, dict]:
    """``param`` (updated in place) and the optimizer state after one update per gradient."""
    opt = getattr(optimizers, kind)(**hp)
    for g in grads:
        opt.apply([("w", param, g)], backend)
    return param, opt.get_state()


@pytest.mark.parametrize("kind, hp", CASES[:8],
                         ids=[f"{k}-{i}" for i, (k, _) in enumerate(CASES[:8])])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size, threads", [(1, 2), (37, 2), (70001, 1), (70001, 2), (70001, 3)])
def test_compiled_updates_equal_the_twin_bit_for_bit(compiled_backend, kind, hp, dtype, size,
                                                      threads):
    """Parameters and slots after five updates, with gradients of every magnitude: normal,
    subnormal-producing (1e-20 squared underflows), zero (moments decay) and NaN in one value.
    70001 values run on ``threads`` threads (PARALLEL_MIN is 32768), with a ragged last share."""
    cnnext.set_num_threads(threads)
    rng = np.random.default_rng(size)
    p0 = rng.standard_normal(size).astype(dtype)
    grads = [rng.standard_normal(size).astype(dtype) * scale for scale in (1, 1e-20, 0, 1e-3, 1)]
    grads[-1][size // 2] = np.nan
    p_twin, state_twin = run_updates(kind, hp, "numpy", p0.copy(), grads)
    p_ours, state_ours = run_updates(kind, hp, compiled_backend, p0.copy(), grads)
    assert p_ours.dtype == dtype and np.isnan(p_ours[size // 2])
    np.testing.assert_array_equal(p_ours, p_twin)
    assert state_ours.keys() == state_twin.keys()
    for key in state_twin:
        np.testing.assert_array_equal(state_ours[key], state_twin[key], err_msg=key)


@pytest.mark.parametrize("kind", ["SGD", "Adam", "RMSprop"])
def test_a_weight_decay_that_rounds_to_zero_is_skipped_on_both_backends(compiled_backend, kind):
    """1e-50 is 0 in float32: neither backend adds ``0 * param`` (NaN for an infinite value)."""
    results = []
    for backend in ("numpy", compiled_backend):
        param = np.array([np.inf, 1.0, -2.0], np.float32)
        getattr(optimizers, kind)(0.1, weight_decay=1e-50).apply(
            [("w", param, np.full(3, 0.5, np.float32))], backend)
        results.append(param)
    assert results[0][0] == np.inf
    np.testing.assert_array_equal(results[1], results[0])


@pytest.mark.parametrize("kind, hp", [("Adam", {}), ("RMSprop", {"centered": True})])
def test_a_gradient_of_another_dtype_is_applied_in_the_parameter_dtype(compiled_backend, kind,
                                                                       hp):
    """A float32 gradient of a float64 parameter: both backends square it in float64 (1e-30
    squared underflows in float32, which made the twin's RMSprop take sqrt(-x) and Adam divide
    by zero)."""
    results = []
    for backend in ("numpy", compiled_backend):
        param = np.array([1.0, 2.0])
        getattr(optimizers, kind)(0.1, **hp).apply(
            [("w", param, np.array([1e-30, 0.5], np.float32))], backend)
        results.append(param)
    assert np.isfinite(results[0]).all()
    np.testing.assert_array_equal(results[1], results[0])


SLOTTED = [(k, hp) for k, hp in CASES[:8] if k != "SGD" or hp.get("momentum")]


@pytest.mark.parametrize("kind, hp", SLOTTED, ids=[f"{k}-{i}" for i, (k, _) in enumerate(SLOTTED)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_slots_below_the_smallest_normal_number_are_stored_as_zero(backend_name, kind, hp, dtype):
    """Zero gradients make the slots decay; IEEE rounding would leave small ones stuck at
    subnormal values for good (0.9 * 2**-149 rounds back to 2**-149 in float32), and every later
    update of them takes a ~100x slower microcode path. A slot value that falls below the
    smallest normal number is stored as +0; a NaN stays NaN; normal values decay as usual."""
    tiny = np.finfo(dtype).tiny
    start = np.array([1.0005 * tiny, -1.0005 * tiny, np.nan, 1.0, 0.0], dtype=dtype)
    param = np.zeros(5, dtype)  # so that weight decay adds nothing to the zero gradient
    opt = getattr(optimizers, kind)(**hp)
    opt.apply([("w", param, np.ones(5, dtype))], backend_name)  # creates the slots
    names = list(opt.get_state())[1:]
    assert names, "this case keeps no slots"
    opt.set_state({"iterations": np.array(1), **{name: start.copy() for name in names}})
    param[:] = 0
    opt.apply([("w", param, np.zeros(5, dtype))], backend_name)
    for name, value in opt.get_state().items():
        if name == "iterations":
            continue
        assert value.dtype == dtype, name
        np.testing.assert_array_equal(value[:2], [0, 0], err_msg=name)
        assert not np.signbit(value[1]), name
        assert np.isnan(value[2]) and tiny < value[3] < 1 and value[4] == 0, (name, value)


@pytest.mark.parametrize("layout", ["fortran", "strided"])
def test_non_contiguous_parameters_update_through_the_twin(compiled_backend, layout, monkeypatch):
    """The compiled ops take C-contiguous arrays only; others must still update correctly."""
    from cnnext.backend import BACKENDS

    def refuse(*args):
        raise AssertionError("the compiled update got a non-contiguous parameter")

    monkeypatch.setattr(BACKENDS[compiled_backend], "adam_update", refuse)
    rng = np.random.default_rng(5)
    base = rng.standard_normal((6, 8)).astype(np.float32)
    param = np.asfortranarray(base) if layout == "fortran" else np.repeat(base, 2, axis=1)[:, ::2]
    grads = [rng.standard_normal((6, 8)).astype(np.float32) for _ in range(3)]
    ours, _ = run_updates("Adam", {}, compiled_backend, param, grads)
    twin, _ = run_updates("Adam", {}, "numpy", base.copy(), grads)
    np.testing.assert_array_equal(ours, twin)


@pytest.mark.parametrize("kind, hp", CASES[:8],
                         ids=[f"{k}-{i}" for i, (k, _) in enumerate(CASES[:8])])
def test_state_and_config_round_trip_continue_identically(kind, hp):
    rng = np.random.default_rng(1)
    grads = [rng.standard_normal(5) for _ in range(6)]
    a = getattr(optimizers, kind)(**hp)
    pa = rng.standard_normal(5)
    for g in grads[:3]:
        a.apply([("w", pa, g)])
    b = optimizers.get(json.loads(json.dumps(optimizers.serialize(a))))
    b.set_state(a.get_state())
    pb = pa.copy()
    for g in grads[3:]:
        a.apply([("w", pa, g)])
        b.apply([("w", pb, g)])
    np.testing.assert_array_equal(pa, pb)
    assert b.get_config() == a.get_config()
    state = a.get_state()
    assert int(state["iterations"]) == 6 and all(k == "iterations" or ":" in k for k in state)


def test_schedule_serialises_inside_optimizer_config():
    opt = optimizers.SGD(schedules.StepDecay(0.1, step_size=2, gamma=0.5), momentum=0.5)
    clone = optimizers.get(json.loads(json.dumps(optimizers.serialize(opt))))
    assert isinstance(clone.learning_rate, schedules.StepDecay)
    assert [clone.learning_rate(s) for s in range(5)] == [0.1, 0.1, 0.05, 0.05, 0.025]


def test_schedules_values():
    exp = schedules.ExponentialDecay(1.0, decay_steps=10, decay_rate=0.5)
    assert exp(0) == 1.0 and exp(10) == 0.5 and exp(5) == pytest.approx(math.sqrt(0.5))
    stair = schedules.ExponentialDecay(1.0, decay_steps=10, decay_rate=0.5, staircase=True)
    assert stair(9) == 1.0 and stair(25) == 0.25
    cos = schedules.CosineDecay(1.0, decay_steps=10, alpha=0.1)
    assert cos(0) == 1.0 and cos(5) == pytest.approx(0.55)
    assert cos(10) == cos(50) == pytest.approx(0.1)
    step = schedules.StepDecay(0.5, step_size=3)
    assert step(2) == 0.5 and step(3) == pytest.approx(0.05)
    with pytest.raises(ValueError, match="decay_steps"):
        schedules.CosineDecay(1.0, decay_steps=0)
    with pytest.raises(ValueError, match="initial_learning_rate must be a finite number > 0"):
        schedules.StepDecay(math.inf, step_size=2)
    with pytest.raises(TypeError, match="staircase must be True or False"):
        schedules.ExponentialDecay(1.0, decay_steps=10, decay_rate=0.5, staircase="yes")
    with pytest.raises(ValueError, match="unknown learning-rate schedule"):
        schedules.deserialize({"class_name": "OneCycle"})


def test_fractional_decay_steps_are_kept_and_a_step_size_must_be_whole():
    """Keras keeps decay_steps as a float; they used to be truncated (0.5 -> 0: division by 0)."""
    assert schedules.ExponentialDecay(1.0, 2.5, 0.5)(5) == pytest.approx(0.25)
    assert schedules.ExponentialDecay(1.0, 0.5, 0.5)(1) == pytest.approx(0.25)
    assert schedules.CosineDecay(1.0, decay_steps=0.5)(1) == pytest.approx(0.0)
    assert schedules.StepDecay(1.0, step_size=np.int64(2), gamma=0.5)(2) == 0.5
    assert schedules.StepDecay(1.0, step_size=2.0, gamma=0.5).step_size == 2  # as torch's StepLR
    for bad in (0.5, 0, True, "2", float("inf"), float("nan")):
        with pytest.raises(ValueError, match="step_size must be a positive int"):
            schedules.StepDecay(1.0, step_size=bad)


def _two_layer_model(name: str) -> Sequential:
    return Sequential([L.Dense(2, input_shape=(3,))], name=name, seed=0, backend="numpy")


def test_an_optimizer_serves_one_model():
    """Slots are keyed by parameter name: a second model would inherit the first's momentum."""
    x, y = np.ones((4, 3)), np.zeros((4, 2))
    opt = optimizers.SGD(0.1, momentum=0.9)
    first = _two_layer_model("first")
    first.compile(opt, "mse")
    first.compile(opt, "mse")  # recompiling the same model keeps it
    second = _two_layer_model("second")
    with pytest.raises(ValueError, match="already compiled into model 'first'; compile each"):
        second.compile(opt, "mse")
    assert second.optimizer is None
    first.train_on_batch(x, y)
    del first
    gc.collect()
    with pytest.raises(ValueError, match="holds 1 updates of state from another model"):
        second.compile(opt, "mse")
    fresh = optimizers.SGD.from_config(opt.get_config())
    second.compile(fresh, "mse")
    assert fresh.iterations == 0 and not fresh.slots
    for clone in (copy.deepcopy(second), pickle.loads(pickle.dumps(second))):
        assert clone.optimizer is not fresh  # the copy's optimizer serves the copy
        clone.compile(clone.optimizer, "mse")
        with pytest.raises(ValueError, match="already compiled into model 'second'"):
            clone.compile(fresh, "mse")
    assert copy.copy(second).optimizer is fresh  # a shallow copy shares it, as shallow copies do
    replaced = optimizers.SGD(0.1)  # an untrained optimizer its model no longer uses is free
    spare = _two_layer_model("spare")
    spare.compile(replaced, "mse")
    spare.compile("sgd", "mse")
    _two_layer_model("next").compile(replaced, "mse")
    old_style = optimizers.SGD.__new__(optimizers.SGD)  # unpickled from before the model link
    old_style.__dict__.update({k: v for k, v in vars(fresh).items() if k != "_model"})
    _two_layer_model("old").compile(old_style, "mse")
    unused = optimizers.Adam()
    _two_layer_model("a").compile(unused, "mse")  # its model is gone and it never trained
    gc.collect()
    second.compile(unused, "mse")
    assert second.optimizer is unused


def test_schedule_drives_the_learning_rate_per_update():
    opt = optimizers.SGD(schedules.StepDecay(1.0, step_size=1, gamma=0.5))
    p = np.zeros(1)
    for _ in range(3):
        opt.apply([("w", p, np.ones(1))])
    np.testing.assert_allclose(p, [-(1.0 + 0.5 + 0.25)])
    assert opt.current_learning_rate() == 0.125


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "rmsprop"])
def test_loss_falls_on_a_tiny_problem(name):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((64, 4)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5, 0.0]) > 0).astype(int)
    model = Sequential([L.Dense(8, activation="relu", input_shape=(4,)),
                        L.Dense(2, activation="softmax")], seed=0, backend="numpy")
    model.compile(name, "sparse_categorical_crossentropy", ["accuracy"])
    before = model.evaluate(x, y)
    history = model.fit(x, y, epochs=15, batch_size=16, verbose=0)
    assert history.history["loss"][-1] < 0.8 * history.history["loss"][0]
    assert model.evaluate(x, y)[0] < before[0]


def test_optimizer_argument_errors():
    assert optimizers.SGD(learning_rate=0).learning_rate == 0.0  # as in torch and Keras
    with pytest.raises(ValueError, match="learning_rate"):
        optimizers.SGD(learning_rate=-0.1)
    with pytest.raises(ValueError, match="learning_rate must be a finite number >= 0"):
        optimizers.SGD(learning_rate=math.inf)
    with pytest.raises(ValueError, match="weight_decay must be a finite number >= 0"):
        optimizers.AdamW(weight_decay=math.inf)
    with pytest.raises(TypeError, match="centered must be True or False; received centered='no'"):
        optimizers.RMSprop(centered="no")
    with pytest.raises(ValueError, match="nesterov"):
        optimizers.SGD(nesterov=True)
    with pytest.raises(ValueError, match="beta_1"):
        optimizers.Adam(beta_1=1.0)
    with pytest.raises(ValueError, match="unknown optimizer 'lbfgs'"):
        optimizers.get("lbfgs")
    with pytest.raises(ValueError, match="iterations"):
        optimizers.Adam().set_state({})
    with pytest.raises(ValueError, match="'iterations' must be an integer >= 0"):
        optimizers.Adam().set_state({"iterations": np.array(-1)})
    with pytest.raises(ValueError, match="'iterations' must be an integer >= 0"):
        optimizers.Adam().set_state({"iterations": np.array(2.5)})
    opt = optimizers.Adam()
    opt.set_state({"iterations": np.array(1), "m:w": np.zeros(2), "v:w": np.zeros(2)})
    with pytest.raises(ValueError, match="shape"):
        opt.apply([("w", np.zeros(3), np.zeros(3))])


def test_optimizer_keeps_float32():
    for name in ("sgd", "adam", "adamw", "rmsprop"):
        opt = optimizers.get(name)
        opt.learning_rate = schedules.CosineDecay(0.1, 10)
        p = np.ones(4, dtype=np.float32)
        opt.apply([("w", p, np.full(4, 0.5, dtype=np.float32))])
        assert p.dtype == np.float32
        assert all(v.dtype == np.float32 for k, v in opt.get_state().items() if k != "iterations")
