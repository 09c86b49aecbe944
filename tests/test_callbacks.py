"""Callbacks: hook order, History, EarlyStopping, ModelCheckpoint, LearningRateScheduler,
TerminateOnNaN, and the progress output."""
from __future__ import annotations

import io

import numpy as np
import pytest

from cnnext import Sequential
from cnnext import layers as L
from cnnext.callbacks import (
    Callback,
    EarlyStopping,
    LearningRateScheduler,
    ModelCheckpoint,
    TerminateOnNaN,
)
from cnnext.progress import ProgressBar, format_seconds

RNG = np.random.default_rng(0)
X = RNG.standard_normal((20, 3)).astype(np.float32)
Y = (X[:, 0] > 0).astype(int)


def model(lr: float = 0.1) -> Sequential:
    from cnnext.optimizers import SGD

    m = Sequential([L.Dense(4, activation="relu", input_shape=(3,)),
                    L.Dense(2, activation="softmax")], seed=0, backend="numpy")
    m.compile(SGD(lr), "sparse_categorical_crossentropy", ["accuracy"])
    return m


class Recorder(Callback):
    def __init__(self):
        super().__init__()
        self.calls = []
        self.weights = []

    def on_train_begin(self, logs=None):
        self.calls.append("train_begin")

    def on_epoch_begin(self, epoch, logs=None):
        self.calls.append(f"epoch_begin {epoch}")

    def on_batch_begin(self, batch, logs=None):
        self.calls.append(f"batch_begin {batch}")

    def on_batch_end(self, batch, logs=None):
        self.calls.append(f"batch_end {batch} {sorted(logs)}")

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append(f"epoch_end {epoch} {sorted(logs)}")
        self.weights.append(self.model.get_weights())

    def on_train_end(self, logs=None):
        self.calls.append("train_end")


def test_hook_order_and_params():
    rec = Recorder()
    model().fit(X, Y, epochs=2, batch_size=8, validation_split=0.2, callbacks=[rec], verbose=0)
    batch_keys = "['accuracy', 'loss', 'size']"
    epoch_keys = "['accuracy', 'loss', 'val_accuracy', 'val_loss']"
    def one_epoch(e):
        return [f"epoch_begin {e}", "batch_begin 0", f"batch_end 0 {batch_keys}",
                "batch_begin 1", f"batch_end 1 {batch_keys}", f"epoch_end {e} {epoch_keys}"]

    assert rec.calls == ["train_begin", *one_epoch(0), *one_epoch(1), "train_end"]
    assert rec.params == {"epochs": 2, "steps": 2, "batch_size": 8, "samples": 16, "verbose": 0}
    assert rec.model is not None


def test_callbacks_must_be_callbacks():
    with pytest.raises(TypeError, match="Callback instances"):
        model().fit(X, Y, callbacks=[lambda: None], verbose=0)


def test_early_stopping_logic_on_given_values():
    class Fake:
        stop_training = False

    stopper = EarlyStopping(monitor="val_loss", patience=2, min_delta=0.01)
    stopper.set_model(Fake())
    stopper.on_train_begin()
    for epoch, value in enumerate([1.0, 0.9, 0.895, 0.92]):
        stopper.on_epoch_end(epoch, {"val_loss": value})
        assert stopper.model.stop_training == (epoch == 3)
    assert stopper.stopped_epoch == 3 and stopper.best == 0.9 and stopper.best_epoch == 1
    acc = EarlyStopping(monitor="val_accuracy", patience=0)
    acc.set_model(Fake())
    acc.on_train_begin()
    acc.on_epoch_end(0, {"val_accuracy": 0.5})
    acc.on_epoch_end(1, {"val_accuracy": 0.6})
    assert not acc.model.stop_training
    acc.on_epoch_end(2, {"val_accuracy": 0.6})
    assert acc.model.stop_training


def test_early_stopping_stops_fit_and_restores_best_weights():
    rec = Recorder()
    stopper = EarlyStopping(monitor="loss", patience=1, restore_best_weights=True)
    m = model(lr=5.0)  # a step size this large makes the loss bounce
    history = m.fit(X, Y, epochs=30, batch_size=20, shuffle=False, callbacks=[rec, stopper],
                    verbose=0)
    losses = history.history["loss"]
    assert stopper.stopped_epoch is not None and len(losses) == stopper.stopped_epoch + 1 < 30
    best = int(np.argmin(losses))
    assert stopper.best_epoch == best
    for a, b in zip(m.get_weights(), rec.weights[best]):
        np.testing.assert_array_equal(a, b)


def test_monitoring_a_missing_quantity_is_an_error():
    with pytest.raises(ValueError, match="'val_loss', which is not in the epoch logs"):
        model().fit(X, Y, callbacks=[EarlyStopping()], verbose=0)
    with pytest.raises(ValueError, match="mode"):
        EarlyStopping(mode="up")


def test_model_checkpoint_saves_each_epoch_or_best_only(monkeypatch):
    m = model()
    saved = []
    monkeypatch.setattr(m, "save", lambda path: saved.append((path, m.get_weights())))
    m.fit(X, Y, epochs=3, validation_data=(X, Y), verbose=0,
          callbacks=[ModelCheckpoint("ckpt-{epoch:02d}-{val_loss:.2f}.npz")])
    assert [p for p, _ in saved][0].startswith("ckpt-01-") and len(saved) == 3
    saved.clear()
    best = ModelCheckpoint("best.npz", monitor="val_loss", save_best_only=True)
    history = m.fit(X, Y, epochs=4, validation_data=(X, -Y + 1), verbose=0, callbacks=[best])
    val = history.history["val_loss"]
    improvements = [i for i in range(4) if val[i] < min(val[:i], default=np.inf)]
    assert len(saved) == len(improvements) >= 1 and best.best == min(val)


def test_model_checkpoint_keeps_its_best_value_across_fits(monkeypatch):
    """A second fit whose validation loss is worse must not replace the best file (Keras)."""
    m = model()
    saved = []
    monkeypatch.setattr(m, "save", lambda path: saved.append(m.get_weights()))
    best = ModelCheckpoint("best.npz", monitor="val_loss", save_best_only=True)
    first = m.fit(X, Y, epochs=2, validation_data=(X, Y), verbose=0, callbacks=[best])
    assert saved and best.best == min(first.history["val_loss"])
    count = len(saved)
    worse = m.fit(X, Y, epochs=2, validation_data=(X, 1 - Y), verbose=0, callbacks=[best])
    assert min(worse.history["val_loss"]) > best.best
    assert len(saved) == count and best.best == min(first.history["val_loss"])


@pytest.mark.parametrize("make", [lambda: EarlyStopping(monitor=None),
                                  lambda: ModelCheckpoint("m.npz", monitor=3)])
def test_the_monitored_quantity_is_named_by_a_string(make):
    with pytest.raises(TypeError, match="monitor must be the name of a logged quantity"):
        make()


def test_model_checkpoint_writes_real_files(tmp_path):
    from cnnext import io as io_module

    m = model()
    path = tmp_path / "model-{epoch}.npz"
    m.fit(X, Y, epochs=2, verbose=0, callbacks=[ModelCheckpoint(str(path), monitor="loss")])
    restored = io_module.load_model(str(tmp_path / "model-2.npz"))
    restored.backend = m.backend  # the file holds no backend; compare like with like
    np.testing.assert_array_equal(restored.predict(X), m.predict(X))


def test_learning_rate_scheduler_sets_rate_each_epoch():
    rates = []

    class Probe(Callback):
        def on_epoch_begin(self, epoch, logs=None):
            rates.append(self.model.optimizer.current_learning_rate())

    m = model(lr=0.1)
    sched = LearningRateScheduler(lambda epoch, lr: lr * 0.5 if epoch else lr)
    m.fit(X, Y, epochs=3, verbose=0, callbacks=[sched, Probe()])
    assert rates == pytest.approx([0.1, 0.05, 0.025])
    with pytest.raises(TypeError, match="callable"):
        LearningRateScheduler(0.1)


def test_a_warm_up_may_start_at_learning_rate_zero():
    """Keras-style warm-up: rate 0 in the first epoch leaves the weights as they are."""
    m = model(lr=0.1)
    start = m.get_weights()
    rates = []

    class Probe(Callback):
        def on_epoch_end(self, epoch, logs=None):
            rates.append(self.model.optimizer.current_learning_rate())
            if epoch == 0:
                for before, after in zip(start, self.model.get_weights()):
                    np.testing.assert_array_equal(before, after)

    m.fit(X, Y, epochs=2, verbose=0,
          callbacks=[LearningRateScheduler(lambda epoch, lr: 0.1 * epoch), Probe()])
    assert rates == pytest.approx([0.0, 0.1])
    assert any(not np.array_equal(a, b) for a, b in zip(start, m.get_weights()))


def test_terminate_on_nan_stops_with_a_message(capsys):
    m = Sequential([L.Dense(1, input_shape=(3,))], seed=0, backend="numpy")
    m.compile("sgd", "mse")
    stopper = TerminateOnNaN()
    y = np.full((20, 1), 1e30, dtype=np.float64)  # squared error overflows float32 -> inf loss
    with np.errstate(over="ignore", invalid="ignore"):
        history = m.fit(X, y, epochs=5, batch_size=5, verbose=0, callbacks=[stopper])
    assert stopper.terminated_at == (0, 0)
    assert len(history.epoch) == 1
    assert "TerminateOnNaN: batch 0 of epoch 1 gave loss inf" in capsys.readouterr().err


def test_verbose_outputs(capsys):
    model().fit(X, Y, epochs=2, batch_size=8, verbose=2, validation_data=(X, Y))
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and err[0].startswith("Epoch 1/2 - ")
    assert "loss: " in err[0] and "val_accuracy: " in err[1]
    model().fit(X, Y, epochs=1, batch_size=8, verbose=1, validation_data=(X, Y))
    err = capsys.readouterr().err.rstrip("\n").split("\n")
    assert err[0] == "Epoch 1/1" and len(err) == 2
    assert "3/3 [" in err[1] and "ms/step - loss: " in err[1] and "val_loss: " in err[1]
    model().fit(X, Y, epochs=1, verbose=0)
    assert capsys.readouterr() == ("", "")


def test_progress_bar_redraws_live_on_a_terminal():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    stream = Tty()
    bar = ProgressBar(4, stream=stream, interval=0.0)
    for done in range(1, 5):
        bar.update(done, {"loss": 1.0 / done})
    bar.close({"loss": 0.25})
    text = stream.getvalue()
    assert bar.done == 4 and text.count("\r") == 5 and "ETA: " in text and text.endswith("loss: 0.2500\n")
    assert "2/4 [==============>..............." in text
    quiet = io.StringIO()
    bar = ProgressBar(4, stream=quiet)
    bar.update(1, {"loss": 1.0})
    assert quiet.getvalue() == ""  # not a terminal: only the final line
    assert format_seconds(5) == "5s" and format_seconds(185) == "3:05"
    assert format_seconds(3723) == "1:02:03"
