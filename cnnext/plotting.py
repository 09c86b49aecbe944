"""PNG plots of training curves, learned conv filters and feature maps (needs matplotlib).

matplotlib is an optional extra (``pip install cnnext[plot]``) imported only when a plot is made.
Figures are drawn on matplotlib's Agg canvas without pyplot, so no global backend or figure state
is touched, and every PNG is written atomically (temp file + rename).
"""
from __future__ import annotations

import math
import os
from typing import Any, Mapping, Sequence

import numpy as np

from .io import atomic_write

_MAX_CHANNEL_PANELS = 4  # draw each input channel separately up to this many channels


def _figure(width: float, height: float) -> Any:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError("cnnext plotting needs matplotlib: pip install cnnext[plot]") from exc
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: str | os.PathLike) -> str:
    with atomic_write(path) as f:
        fig.savefig(f, format="png")
    return os.fspath(path)


# ------------------------------------------------------------------------------ training curves
def plot_history(history: Any, path: str | os.PathLike) -> str:
    """One panel per quantity (loss, then each metric), train and validation curves per epoch.

    ``history`` is the :class:`History` returned by ``fit`` or its ``.history`` dict
    (``{"loss": [...], "val_loss": [...], "accuracy": [...], ...}``). Returns ``path``.
    """
    logs: Mapping[str, Sequence[float]] = getattr(history, "history", history)
    if not isinstance(logs, Mapping) or not logs:
        raise ValueError("plot_history needs a History or a non-empty dict of per-epoch values")
    names = [k for k in logs if not k.startswith("val_")]
    names += [k[4:] for k in logs if k.startswith("val_") and k[4:] not in names]
    names.sort(key=lambda k: (k != "loss", k))
    fig = _figure(4.5 * len(names), 3.5)
    for i, name in enumerate(names):
        ax = fig.add_subplot(1, len(names), i + 1)
        for key, label in ((name, "train"), ("val_" + name, "validation")):
            if key in logs:
                values = np.asarray(logs[key], dtype=float)
                ax.plot(np.arange(1, len(values) + 1), values, marker="o", markersize=3, label=label)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        epochs = max(len(logs[k]) for k in (name, "val_" + name) if k in logs)
        ax.set_xticks(range(1, epochs + 1, max(1, math.ceil(epochs / 10))))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return _save(fig, path)


# ------------------------------------------------------------------------------ conv layers
def _conv_layer(model_or_layer: Any, layer: Any = None) -> Any:
    """The Conv2D layer to draw: ``model_or_layer`` itself, ``layer`` (name, index or object) of a
    model, or a model's first Conv2D."""
    from .layers import Conv2D

    if isinstance(model_or_layer, Conv2D):
        return model_or_layer
    layers = getattr(model_or_layer, "layers", None)
    if layers is None:
        raise ValueError(f"expected a Conv2D layer or a model, got {type(model_or_layer).__name__}")
    if layer is None:
        found = [candidate for candidate in layers if isinstance(candidate, Conv2D)]
        if not found:
            raise ValueError("the model has no Conv2D layer to plot")
        return found[0]
    chosen = _find_layer(model_or_layer, layer)
    if not isinstance(chosen, Conv2D):
        raise ValueError(f"layer {chosen.name!r} is a {type(chosen).__name__}, not a Conv2D layer")
    return chosen


def _find_layer(model: Any, layer: Any) -> Any:
    """A model's layer given by object, name or index."""
    if isinstance(layer, str):
        for candidate in model.layers:
            if candidate.name == layer:
                return candidate
        raise ValueError(f"no layer named {layer!r}; layers are {[c.name for c in model.layers]}")
    if isinstance(layer, (int, np.integer)) and not isinstance(layer, bool):
        if not -len(model.layers) <= layer < len(model.layers):
            raise ValueError(f"layer index {layer} out of range for {len(model.layers)} layers")
        return model.layers[layer]
    if any(layer is candidate for candidate in model.layers):
        return layer
    raise ValueError(f"{layer!r} is not a layer of this model")


def _grid(count: int, per_item: int) -> tuple[int, int]:
    """(rows, columns) of a near-square grid of ``count`` items, each ``per_item`` panels wide."""
    items_per_row = max(1, math.ceil(math.sqrt(count / per_item)))
    return math.ceil(count / items_per_row), items_per_row * per_item


def plot_filters(model_or_layer: Any, path: str | os.PathLike, layer: Any = None) -> str:
    """Grid of a Conv2D layer's kernels, one panel per output filter and input channel (the mean
    over input channels when there are more than four). One symmetric colour scale for the whole
    layer (red positive, blue negative). Returns ``path``.

    ``model_or_layer``: a Conv2D layer, or a model (then ``layer`` picks one by name or index;
    default the first Conv2D).
    """
    conv = _conv_layer(model_or_layer, layer)
    if not conv.built:
        raise ValueError(f"layer {conv.name!r} is not built yet; it has no kernels to plot")
    kernel = np.asarray(conv.params["kernel"], dtype=float)  # (KH, KW, C, F)
    channels, filters = kernel.shape[2], kernel.shape[3]
    if channels > _MAX_CHANNEL_PANELS:
        kernel = kernel.mean(axis=2, keepdims=True)
    per_filter = kernel.shape[2]
    rows, cols = _grid(filters, per_filter)
    limit = float(np.abs(kernel).max()) or 1.0
    fig = _figure(1.3 * cols + 1.0, 1.4 * rows + 0.6)
    fig.suptitle(f"{conv.name}: {filters} filters {kernel.shape[0]}x{kernel.shape[1]}"
                 + (f", mean over {channels} input channels" if per_filter < channels else ""))
    for f in range(filters):
        for c in range(per_filter):
            ax = fig.add_subplot(rows, cols, f * per_filter + c + 1)
            image = ax.imshow(kernel[:, :, c, f], cmap="RdBu_r", vmin=-limit, vmax=limit)
            ax.set_title(f"f{f}" + (f" c{c}" if per_filter > 1 else ""), fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.colorbar(image, ax=fig.axes, shrink=0.6)
    return _save(fig, path)


def plot_feature_maps(model: Any, layer: Any, x: np.ndarray, path: str | os.PathLike) -> str:
    """Grid of one layer's output channels for one image, in inference mode. Returns ``path``.

    ``layer``: name, index or object of a layer with spatial output ``(N, H, W, C)`` (Conv2D,
    pooling, upsampling, ...). ``x``: one image ``(H, W, C)`` or a batch of one ``(1, H, W, C)``.
    """
    target = _find_layer(model, layer)
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[np.newaxis]
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"x must be one image (H, W, C) or (1, H, W, C), got shape {x.shape}")
    maps = _forward_until(model, target, x)
    if maps.ndim != 4:
        raise ValueError(f"layer {target.name!r} ({type(target).__name__}) outputs shape "
                         f"{maps.shape[1:]}, not feature maps (H, W, C)")
    maps = maps[0].astype(float)
    rows, cols = _grid(maps.shape[2], 1)
    fig = _figure(1.6 * cols + 0.4, 1.7 * rows + 0.6)
    fig.suptitle(f"{target.name}: {maps.shape[2]} feature maps {maps.shape[0]}x{maps.shape[1]}")
    for c in range(maps.shape[2]):
        ax = fig.add_subplot(rows, cols, c + 1)
        ax.imshow(maps[:, :, c], cmap="gray")
        ax.set_title(f"channel {c}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    return _save(fig, path)


def _forward_until(model: Any, target: Any, x: np.ndarray) -> np.ndarray:
    """Output of ``target`` for input ``x``, running the model's layers in inference mode."""
    y = model._prepare_x(x)  # the model's own input conversion (uint8 scaling, checks)
    for layer in model.layers:
        y = layer.forward(y, training=False)
        if layer is target:
            return y
    raise AssertionError("unreachable: target was found among model.layers")
