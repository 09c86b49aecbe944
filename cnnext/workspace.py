"""Reusable result arrays: the ``out`` argument of the ops, and per-layer workspaces.

Every op of the backend table takes an optional ``out``: an array of exactly the result's shape
and dtype (C-contiguous, writeable, sharing no memory with the inputs) that receives the result
and is returned. :func:`output` and :func:`into` are the two backends' side of that contract.

A :class:`Workspace` holds the named arrays one layer writes its results into, so that a model
allocates no new large buffers from one batch to the next. Each name is backed by one byte buffer
that grows to the largest size asked for, so alternating batch sizes (training, then validation,
then the last partial batch) reuse it too. :func:`scratch` gives the compiled kernels their
temporary arrays the same way, from one workspace per Python thread.
"""
from __future__ import annotations

import math
import threading
from typing import Optional

import numpy as np


def output(out: Optional[np.ndarray], shape: tuple, dtype) -> np.ndarray:
    """``out`` when given (the caller has checked its shape and dtype), else a new array."""
    return np.empty(shape, dtype=dtype) if out is None else out


def into(out: Optional[np.ndarray], result: np.ndarray) -> np.ndarray:
    """``result``, or ``out`` holding a copy of it when ``out`` is given."""
    if out is None:
        return result
    np.copyto(out, result)
    return out


# Workspace arrays start on a cache-line boundary (so threads writing neighbouring parts of one
# share no cache line when the parts are multiples of 64 bytes).
ALIGNMENT = 64
# Views kept per name (one per shape and dtype asked for), so that names shared by layers of
# several sizes hand out their arrays without rebuilding them.
MAX_VIEWS = 16


class Workspace:
    """Named arrays reused across calls: ``array(name, shape, dtype)`` returns a view of the
    buffer kept for ``name``, reallocated only when it is too small, starting at a multiple of
    ALIGNMENT bytes. Its contents are whatever the last user left there. Arrays of one name share
    memory, so a name has one user at a time."""

    def __init__(self) -> None:
        self._buffers: dict[str, np.ndarray] = {}
        self._starts: dict[str, int] = {}  # per name: its buffer's first aligned byte
        self._views: dict[str, dict[tuple, np.ndarray]] = {}  # per name: (shape, dtype) -> view

    def array(self, name: str, shape: tuple, dtype) -> np.ndarray:
        views = self._views.setdefault(name, {})
        view = views.get((shape, dtype))
        if view is not None:
            return view
        nbytes = math.prod(shape) * np.dtype(dtype).itemsize
        buf = self._buffers.get(name)
        if buf is None or buf.nbytes < nbytes + ALIGNMENT:
            buf = self._buffers[name] = np.empty(nbytes + ALIGNMENT, dtype=np.uint8)
            self._starts[name] = -buf.ctypes.data % ALIGNMENT
            views.clear()  # they show the old buffer
        elif len(views) >= MAX_VIEWS:
            views.clear()
        start = self._starts[name]
        view = buf[start : start + nbytes].view(dtype).reshape(shape)
        views[(shape, dtype)] = view
        return view

    @property
    def nbytes(self) -> int:
        """Bytes held by all buffers."""
        return sum(buf.nbytes for buf in self._buffers.values())

    def clear(self) -> None:
        """Release every buffer."""
        self._buffers.clear()
        self._starts.clear()
        self._views.clear()


_scratch = threading.local()


def scratch(name: str, shape: tuple, dtype, zero: bool = False) -> np.ndarray:
    """A compiled kernel's temporary array ``name`` from this Python thread's scratch workspace,
    zero-filled when ``zero`` (else holding whatever its last user left)."""
    workspace = getattr(_scratch, "workspace", None)
    if workspace is None:
        workspace = _scratch.workspace = Workspace()
    arr = workspace.array(name, tuple(shape), dtype)
    if zero:
        arr.fill(0)
    return arr
