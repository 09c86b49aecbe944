"""Training output: a live single-line progress bar and one-line epoch summaries.

Written in-house rather than with tqdm: the bar is about fifty lines, Keras-style metric
formatting is what users of a Keras-like API expect, and the package keeps its runtime dependencies
to numpy and threadpoolctl. The bar redraws one line with ``\\r`` on ``stderr`` at most every
``interval`` seconds; when the stream is not a terminal (CI logs, files) it stays silent until the
epoch's final line, so logs are not flooded with partial lines.
"""
from __future__ import annotations

import sys
import time
from typing import Mapping, Optional, TextIO


def format_logs(values: Mapping[str, float]) -> str:
    """``"loss: 0.1234 - accuracy: 0.9500"``."""
    return " - ".join(f"{key}: {value:.4f}" for key, value in values.items())


def format_seconds(seconds: float) -> str:
    """``"42s"``, ``"3:05"`` or ``"1:02:03"``."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}:{secs:02d}"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


class ProgressBar:
    """``37/188 [=====>........] - ETA: 3s - loss: 0.5231 - accuracy: 0.8123`` for ``total``
    steps; :meth:`update` after each step, :meth:`close` once at the end (adds a newline)."""

    def __init__(self, total: int, stream: Optional[TextIO] = None, width: int = 30,
                 interval: float = 0.1):
        self.total = max(int(total), 1)
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.interval = interval
        self.start = time.perf_counter()
        self._last_draw = 0.0
        self._live = bool(getattr(self.stream, "isatty", lambda: False)())
        self._closed = False
        self._width_used = 0  # length of the last line drawn, to blank its leftovers
        self.done = 0
        self.values: Mapping[str, float] = {}

    def _bar(self, done: int) -> str:
        digits = len(str(self.total))
        filled = int(self.width * done / self.total)
        arrow = ">" if 0 < filled < self.width else ""
        body = ("=" * max(filled - len(arrow), 0) + arrow).ljust(self.width, ".")
        return f"{done:>{digits}}/{self.total} [{body}]"

    def _write(self, text: str, end: str = "") -> None:
        self.stream.write("\r" + text + end)
        self.stream.flush()

    def update(self, done: int, values: Mapping[str, float]) -> None:
        """Redraw for ``done`` finished steps with the running ``values`` (throttled)."""
        self.done, self.values = done, values
        now = time.perf_counter()
        if not self._live or (now - self._last_draw < self.interval and done < self.total):
            return
        self._last_draw = now
        eta = (now - self.start) / max(done, 1) * (self.total - done)
        parts = [self._bar(done), f"ETA: {format_seconds(eta)}"]
        if values:
            parts.append(format_logs(values))
        line = " - ".join(parts)
        self._write(line.ljust(self._width_used))
        self._width_used = len(line)

    def close(self, values: Optional[Mapping[str, float]] = None) -> None:
        """Final line: steps done, elapsed time, time per step and ``values`` (default: the last
        update's); ends the line."""
        if self._closed:
            return
        self._closed = True
        values = self.values if values is None else values
        elapsed = time.perf_counter() - self.start
        per_step = elapsed / max(self.done, 1)
        parts = [self._bar(self.done), f"{format_seconds(elapsed)} {per_step * 1e3:.0f}ms/step"]
        if values:
            parts.append(format_logs(values))
        line = " - ".join(parts)
        self._write(line.ljust(self._width_used), end="\n")


def epoch_line(epoch: int, epochs: int, seconds: float, values: Mapping[str, float]) -> str:
    """``"Epoch 3/10 - 2s - loss: 0.4012 - val_loss: 0.4410"`` (the ``verbose=2`` output)."""
    parts = [f"Epoch {epoch}/{epochs}", format_seconds(seconds)]
    if values:
        parts.append(format_logs(values))
    return " - ".join(parts)
