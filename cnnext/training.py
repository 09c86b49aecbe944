"""The training loop behind :meth:`cnnext.models.Sequential.fit`.

The model has already validated and converted the data (C-contiguous inputs in the model dtype,
labels prepared by the loss); this module batches it, drives the callbacks and the progress
output, and applies each optimizer step atomically with respect to Ctrl-C.
"""
from __future__ import annotations

import math
import signal
import sys
import threading
import time
from typing import Any, Optional, Sequence

import numpy as np

from .callbacks import Callback, CallbackList, History
from .progress import ProgressBar, epoch_line


class DeferInterrupt:
    """Hold back Ctrl-C (SIGINT) while the block runs and deliver it afterwards, so an optimizer
    step is applied to every parameter or to none. A no-op outside the main thread."""

    def __enter__(self) -> "DeferInterrupt":
        self.received: list = []
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, lambda *args: self.received.append(args))
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.previous is None:
            return
        signal.signal(signal.SIGINT, self.previous)
        if self.received:
            if callable(self.previous):
                self.previous(*self.received[0])
            elif self.previous != signal.SIG_IGN:
                raise KeyboardInterrupt


def split_validation(x: np.ndarray, t: np.ndarray, fraction: float) -> tuple:
    """``(x_train, t_train, (x_val, t_val))`` holding out the last ``fraction`` of the samples."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation_split must be in (0, 1); received {fraction!r}")
    split = int(len(x) * (1.0 - fraction))
    if split < 1 or split == len(x):
        raise ValueError(f"validation_split={fraction} leaves no training or no validation "
                         f"samples out of {len(x)}")
    return x[:split], t[:split], (x[split:], t[split:])


def run_epochs(model: Any, x: np.ndarray, t: np.ndarray, epochs: int, batch_size: int,
               val: Optional[tuple], rng: Optional[np.random.Generator], verbose: int,
               callbacks: Sequence[Callback]) -> History:
    """Train ``model`` for up to ``epochs`` epochs (``rng`` None: no shuffling); returns the
    History, also stored as ``model.history``."""
    history = History()
    steps = math.ceil(len(x) / batch_size)
    cbs = CallbackList([history, *callbacks], model, {
        "epochs": epochs, "steps": steps, "batch_size": batch_size, "samples": len(x),
        "verbose": verbose})
    mode = model._loss_mode()
    model.stop_training = False
    model.history = history
    cbs.call("on_train_begin", {})
    for epoch in range(epochs):
        cbs.call("on_epoch_begin", epoch, {})
        started = time.perf_counter()
        bar = ProgressBar(steps) if verbose == 1 else None
        if bar is not None:
            print(f"Epoch {epoch + 1}/{epochs}", file=sys.stderr)
        logs: Optional[dict[str, float]] = None
        try:
            logs = _run_epoch(model, x, t, mode, batch_size, rng, cbs, bar)
            if val is not None:
                for key, value in model._evaluate_arrays(*val, batch_size).items():
                    logs[f"val_{key}"] = value
        finally:
            if bar is not None:
                bar.close(logs)
        if verbose == 2:
            print(epoch_line(epoch + 1, epochs, time.perf_counter() - started, logs),
                  file=sys.stderr)
        cbs.call("on_epoch_end", epoch, logs)
        if model.stop_training:
            break
    cbs.call("on_train_end", {})
    return history


def _run_epoch(model: Any, x: np.ndarray, t: np.ndarray, mode: str, batch_size: int,
               rng: Optional[np.random.Generator], cbs: CallbackList,
               bar: Optional[ProgressBar]) -> dict[str, float]:
    """One pass over the training data; returns the sample-weighted means of the batch logs."""
    order = rng.permutation(len(x)) if rng is not None else None
    totals: dict[str, float] = {}
    seen = 0
    means: dict[str, float] = {}
    for step in range(math.ceil(len(x) / batch_size)):
        part = slice(step * batch_size, (step + 1) * batch_size)
        idx = order[part] if order is not None else part
        xb, tb = x[idx], t[idx]
        cbs.call("on_batch_begin", step, {})
        loss, out = model._train_step(xb, tb, mode)
        batch_logs = model._logs(tb, out, loss)
        seen += len(xb)
        for key, value in batch_logs.items():
            totals[key] = totals.get(key, 0.0) + value * len(xb)
        means = {key: value / seen for key, value in totals.items()}
        cbs.call("on_batch_end", step, {**batch_logs, "size": len(xb)})
        if bar is not None:
            bar.update(step + 1, means)
        if model.stop_training:
            break
    return means
