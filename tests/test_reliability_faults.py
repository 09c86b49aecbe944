"""Faults: silent corruption of saved weights is always detected, a failing checkpoint save keeps
the previous checkpoint, diverging training stops at the first non-finite loss, and Ctrl-C from
inside fit leaves a usable model whose weights are those after the last completed step.

(tests/test_io*.py already cover truncated/foreign/pickle-carrying files, the killed writer and
resuming from a checkpoint; these tests fill the remaining gaps.)"""
from __future__ import annotations

import io
import os
import zipfile

import numpy as np
import pytest

import cnnext
from cnnext import layers as L
from cnnext.callbacks import Callback, ModelCheckpoint, TerminateOnNaN
from cnnext.io import ModelFileError, load_model, save_model
from cnnext.models import Sequential

TRIALS = 50
RNG = np.random.default_rng(7)
X = RNG.normal(size=(24, 6, 6, 2)).astype(np.float32)
Y = RNG.integers(0, 3, 24)


def _model(backend: str | None = None, optimizer="adam") -> Sequential:
    model = Sequential([L.Conv2D(4, 3, activation="relu", input_shape=(6, 6, 2)),
                        L.BatchNormalization(), L.MaxPool2D(2), L.Flatten(),
                        L.Dense(3, activation="softmax")], seed=0, backend=backend)
    model.compile(optimizer, "sparse_categorical_crossentropy", ["accuracy"])
    return model


# --- silent corruption --------------------------------------------------------------------------

def _weight_regions(data: bytes) -> list[tuple[str, int, int, int]]:
    """``(member, member_start, start, end)``: file offsets of every weight member and of its
    raw array bytes."""
    regions = []
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for info in archive.infolist():
            if "/params/" not in info.filename and "/state/" not in info.filename:
                continue
            assert info.compress_type == zipfile.ZIP_STORED
            local = info.header_offset
            name_len = int.from_bytes(data[local + 26:local + 28], "little")
            extra_len = int.from_bytes(data[local + 28:local + 30], "little")
            start = local + 30 + name_len + extra_len
            member = data[start:start + info.file_size]
            preamble = 10 + int.from_bytes(member[8:10], "little")  # .npy v1 header
            regions.append((info.filename, start, start + preamble, start + info.file_size))
    return regions


def _rezip(data: bytes, member: str, corrupt) -> bytes:
    """The archive with ``member``'s bytes replaced by ``corrupt(bytes)`` and a VALID zip CRC,
    so only cnnext's own checksum can notice."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            content = src.read(info)
            dst.writestr(info, corrupt(content) if info.filename == member else content)
    return out.getvalue()


def _flip(buf: bytearray, start: int, end: int, rng: np.random.Generator) -> None:
    for at in rng.choice(np.arange(start, end), size=min(int(rng.integers(1, 9)), end - start),
                         replace=False):
        buf[at] ^= int(rng.integers(1, 256))


def test_checksum_detects_random_corruption_of_the_weights(tmp_path):
    """50 trials, each flipping 1-8 random bytes inside the stored weights: half straight in the
    file (the zip CRC may notice), half rewritten with a valid zip CRC (only the SHA-256 over
    the arrays can notice). Every trial must be refused with a ModelFileError."""
    model = _model()
    model.fit(X, Y, epochs=1, batch_size=8, verbose=0)
    path = tmp_path / "model.npz"
    save_model(model, path)
    data = path.read_bytes()
    regions = _weight_regions(data)
    assert len(regions) >= 6  # conv/dense kernels and biases, BN gamma/beta and moving stats
    rng = np.random.default_rng(11)
    detected = {"raw": 0, "valid_crc": 0}
    for trial in range(TRIALS):
        member, member_start, start, end = regions[rng.integers(len(regions))]
        if trial % 2 == 0:
            damaged = bytearray(data)
            _flip(damaged, start, end, rng)
            kind = "raw"
        else:
            def corrupt(content: bytes) -> bytes:
                buf = bytearray(content)
                _flip(buf, start - member_start, end - member_start, rng)
                return bytes(buf)

            damaged, kind = _rezip(data, member, corrupt), "valid_crc"
        target = tmp_path / f"damaged-{trial}.npz"
        target.write_bytes(bytes(damaged))
        expected = "CRC mismatch|checksum mismatch" if kind == "raw" else "SHA-256 checksum"
        with pytest.raises(ModelFileError, match=expected):
            load_model(target)
        detected[kind] += 1
        target.unlink()
    print(f"\ncorruptions detected: {sum(detected.values())}/{TRIALS} {detected}")


# --- checkpoints --------------------------------------------------------------------------------

def test_model_checkpoint_keeps_the_last_good_file_when_a_save_fails(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.npz"
    model = _model()
    saved_weights = []

    class Record(Callback):
        def on_epoch_end(self, epoch, logs=None):
            saved_weights.append(model.get_weights())

    real_write = cnnext.io._write_archive
    calls = {"n": 0}

    def fail_on_third(f, arrays):
        calls["n"] += 1
        if calls["n"] == 3:
            f.write(b"PK\x03\x04 half an archive")
            raise OSError("No space left on device (simulated)")
        real_write(f, arrays)

    monkeypatch.setattr(cnnext.io, "_write_archive", fail_on_third)
    with pytest.raises(OSError, match="No space left"):
        model.fit(X, Y, epochs=5, batch_size=8, verbose=0, shuffle=False,
                  callbacks=[Record(), ModelCheckpoint(str(path))])
    assert os.listdir(tmp_path) == ["ckpt.npz"]  # no temp file left behind
    restored = load_model(path)
    for got, want in zip(restored.get_weights(), saved_weights[1]):  # epoch 2's weights
        np.testing.assert_array_equal(got, want)
    assert restored.optimizer.iterations == 2 * 3


# --- training faults ----------------------------------------------------------------------------

class LossLog(Callback):
    def __init__(self):
        super().__init__()
        self.losses = []

    def on_batch_end(self, batch, logs=None):
        self.losses.append(logs["loss"])


def test_terminate_on_nan_stops_at_the_first_diverged_batch(capsys):
    """A learning rate far too large makes the loss blow up after some steps; training stops at
    the first non-finite batch loss, not at the end of the epoch."""
    model = Sequential([L.Flatten(input_shape=(6, 6, 2)), L.Dense(1)], seed=0)
    model.compile(cnnext.optimizers.SGD(learning_rate=5.0), "mse")
    log, stop = LossLog(), TerminateOnNaN()
    y = RNG.normal(size=(24, 1)).astype(np.float32) * 10
    with np.errstate(all="ignore"):
        history = model.fit(X, y, epochs=50, batch_size=4, verbose=0, shuffle=False,
                            callbacks=[stop, log])
    finite = np.isfinite(log.losses)
    assert not finite[-1] and finite[:-1].all() and len(log.losses) > 1
    epoch, batch = stop.terminated_at
    assert epoch * 6 + batch + 1 == len(log.losses)
    assert len(history.epoch) == epoch + 1
    message = capsys.readouterr().err
    assert f"TerminateOnNaN: batch {batch} of epoch {epoch + 1} gave loss" in message
    assert "training stopped" in message


class InterruptAfter(Callback):
    """Raise KeyboardInterrupt (as Ctrl-C would) at the end of the given global step."""

    def __init__(self, step: int):
        super().__init__()
        self.step, self.seen = step, 0

    def on_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.step:
            raise KeyboardInterrupt


def test_keyboard_interrupt_mid_epoch_leaves_a_usable_consistent_model(backend_name):
    """Interrupted in the middle of epoch 2, after step 5 of 3 per epoch: the weights and the
    optimizer state are exactly those of 5 completed steps, predict works, and fit resumes."""
    interrupted = _model(backend_name)
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit(X, Y, epochs=3, batch_size=8, verbose=0, shuffle=False,
                        callbacks=[InterruptAfter(5)])
    reference = _model(backend_name)
    for step in range(5):
        part = slice(step % 3 * 8, step % 3 * 8 + 8)
        reference.train_on_batch(X[part], Y[part])
    assert interrupted.optimizer.iterations == reference.optimizer.iterations == 5
    for got, want in zip(interrupted.get_weights(), reference.get_weights()):
        assert np.isfinite(got).all()
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(interrupted.predict(X), reference.predict(X))
    interrupted.fit(X, Y, epochs=1, batch_size=8, verbose=0, shuffle=False)
    reference.fit(X, Y, epochs=1, batch_size=8, verbose=0, shuffle=False)
    for got, want in zip(interrupted.get_weights(), reference.get_weights()):
        np.testing.assert_array_equal(got, want)
