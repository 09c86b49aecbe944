"""Layers (channels-last) and the name registry used to rebuild them from configs.

Every class here follows the :class:`~cnnext.layers.base.Layer` contract. Keras spellings are
accepted as aliases (``MaxPooling2D``, ``AveragePooling2D``, ``UpSampling2D``, ``Conv2d`` ...);
configs always record the canonical class name.
"""
from __future__ import annotations

from .base import ActivatedLayer, Layer
from .conv import Conv2D
from .core import Activation, Dense, Dropout
from .normalization import BatchNormalization
from .pooling import AvgPool2D, MaxPool2D, MinPool2D, Pool2D
from .reshaping import Flatten, UpSample2D

LAYER_CLASSES: dict[str, type[Layer]] = {
    cls.__name__: cls
    for cls in (Conv2D, Pool2D, MaxPool2D, MinPool2D, AvgPool2D, UpSample2D, Flatten, Dense,
                Dropout, BatchNormalization, Activation)
}
ALIASES: dict[str, type[Layer]] = {
    "Conv2d": Conv2D,
    "Pool2d": Pool2D,
    "MaxPooling2D": MaxPool2D,
    "MinPooling2D": MinPool2D,
    "AveragePooling2D": AvgPool2D,
    "AvgPooling2D": AvgPool2D,
    "UpSampling2D": UpSample2D,
    "BatchNorm": BatchNormalization,
}

# Alias names importable from this package, e.g. ``from cnnext.layers import MaxPooling2D``.
Conv2d, Pool2d, MaxPooling2D, MinPooling2D = Conv2D, Pool2D, MaxPool2D, MinPool2D
AveragePooling2D = AvgPooling2D = AvgPool2D
UpSampling2D = UpSample2D
BatchNorm = BatchNormalization


def get_layer_class(class_name: str) -> type[Layer]:
    """The layer class registered as ``class_name`` (canonical name or alias)."""
    cls = LAYER_CLASSES.get(class_name) or ALIASES.get(class_name)
    if cls is None:
        raise ValueError(
            f"unknown layer class {class_name!r}; expected one of {sorted(LAYER_CLASSES)}"
        )
    return cls


__all__ = sorted([*LAYER_CLASSES, *ALIASES, "ActivatedLayer", "Layer", "get_layer_class"])
