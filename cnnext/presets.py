"""Named architectures for 28x28x1 images and 10 classes, each with its training defaults.

- ``lenet5``: conv 6@5x5 (same) - max-pool - conv 16@5x5 - max-pool - dense 120 - 84 - 10;
  SGD with momentum 0.9, learning rate 0.05 with cosine decay over the run, batch 128.
- ``seed-test1`` .. ``seed-test4``: the four test architectures of the "CNN from scratch"
  write-up (section 4); ``seed-test4`` (conv 4@3x3 - conv 8@3x3 - max-pool - dense 64 - dropout
  0.1 - dense 10) trains with Adam.
- ``vgg-small``: two VGG blocks (2x conv 3x3 same + max-pool, 32 then 64 filters), dense 128.

Every model ends in a 10-way softmax, is trained with sparse categorical cross-entropy on integer
labels and reports accuracy. Every preset takes its images through :func:`prepare_images`: uint8
pixels scaled to ``[0, 1]``, then standardised with the Fashion-MNIST training-set mean and
standard deviation (fixed constants, so a saved model needs no statistics of its own).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from . import optimizers
from .layers import Conv2D, Dense, Dropout, Flatten, Layer, MaxPool2D
from .models import Sequential
from .preprocessing import normalize, to_float
from .schedules import CosineDecay

INPUT_SHAPE = (28, 28, 1)
NUM_CLASSES = 10
# Pixel mean and standard deviation of the 60,000 Fashion-MNIST training images, scaled to [0, 1].
PIXEL_MEAN, PIXEL_STD = 0.2860, 0.3530
SCHEDULES = ("constant", "cosine")


def prepare_images(x: np.ndarray) -> np.ndarray:
    """Images ``(N, 28, 28, 1)``, uint8 0..255 or floats in ``[0, 1]`` -> float32
    ``(x01 - PIXEL_MEAN) / PIXEL_STD``, the input every preset model expects."""
    x = np.asarray(x)
    return normalize(to_float(x, scale=1 / 255 if x.dtype == np.uint8 else 1.0), PIXEL_MEAN,
                     PIXEL_STD)[0]


@dataclass(frozen=True)
class Preset:
    """An architecture plus the optimizer, learning rate (and its ``schedule``: ``"constant"`` or
    ``"cosine"`` decay to 0 over the whole run), batch size and epochs it trains with."""

    name: str
    description: str
    layers: Callable[[], list[Layer]]
    optimizer: str
    learning_rate: float
    batch_size: int
    epochs: int
    schedule: str = "constant"


def _lenet5() -> list[Layer]:
    return [
        Conv2D(6, 5, padding="same", activation="relu", input_shape=INPUT_SHAPE),
        MaxPool2D(2),
        Conv2D(16, 5, activation="relu"),
        MaxPool2D(2),
        Flatten(),
        Dense(120, activation="relu"),
        Dense(84, activation="relu"),
        Dense(NUM_CLASSES, activation="softmax"),
    ]


def _seed_test1() -> list[Layer]:
    return [
        Conv2D(8, 3, activation="relu", input_shape=INPUT_SHAPE),
        Flatten(),
        Dense(NUM_CLASSES, activation="softmax"),
    ]


def _seed_test2() -> list[Layer]:
    return [
        Conv2D(8, 3, activation="relu", input_shape=INPUT_SHAPE),
        Conv2D(16, 3, activation="relu"),
        Flatten(),
        Dense(NUM_CLASSES, activation="softmax"),
    ]


def _seed_test3() -> list[Layer]:
    return [
        Conv2D(4, 3, activation="relu", input_shape=INPUT_SHAPE),
        MaxPool2D(2),
        Conv2D(8, 3, activation="relu"),
        Dropout(0.2),
        Flatten(),
        Dense(NUM_CLASSES, activation="softmax"),
    ]


def _seed_test4() -> list[Layer]:
    return [
        Conv2D(4, 3, activation="relu", input_shape=INPUT_SHAPE),
        Conv2D(8, 3, activation="relu"),
        MaxPool2D(2),
        Flatten(),
        Dense(64, activation="relu"),
        Dropout(0.1),
        Dense(NUM_CLASSES, activation="softmax"),
    ]


def _vgg_small() -> list[Layer]:
    return [
        Conv2D(32, 3, padding="same", activation="relu", input_shape=INPUT_SHAPE),
        Conv2D(32, 3, padding="same", activation="relu"),
        MaxPool2D(2),
        Conv2D(64, 3, padding="same", activation="relu"),
        Conv2D(64, 3, padding="same", activation="relu"),
        MaxPool2D(2),
        Flatten(),
        Dense(128, activation="relu"),
        Dropout(0.3),
        Dense(NUM_CLASSES, activation="softmax"),
    ]


PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset("lenet5", "LeNet-5: conv 6@5x5 same, pool, conv 16@5x5, pool, dense 120-84-10",
               _lenet5, "sgd", 0.05, 128, 5, "cosine"),
        Preset("seed-test1", "seed write-up test 1: conv 8@3x3, dense 10",
               _seed_test1, "adam", 0.001, 32, 2),
        Preset("seed-test2", "seed write-up test 2: conv 8@3x3, conv 16@3x3, dense 10",
               _seed_test2, "adam", 0.001, 32, 2),
        Preset("seed-test3", "seed write-up test 3: conv 4@3x3, pool, conv 8@3x3, dropout 0.2, "
               "dense 10", _seed_test3, "adam", 0.001, 32, 2),
        Preset("seed-test4", "seed write-up test 4: conv 4@3x3, conv 8@3x3, pool, dense 64, "
               "dropout 0.1, dense 10", _seed_test4, "adam", 0.001, 32, 2),
        Preset("vgg-small", "VGG-style: 2x conv 32@3x3, pool, 2x conv 64@3x3, pool, dense 128, "
               "dropout 0.3, dense 10", _vgg_small, "adam", 0.001, 64, 3),
    )
}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; ValueError listing the known names otherwise."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}")
    return PRESETS[name]


def make_optimizer(name: str, learning_rate: optimizers.LearningRate,
                   momentum: float = 0.9) -> optimizers.Optimizer:
    """An optimizer by name (``"sgd"``, ``"adam"``, ``"adamw"``, ``"rmsprop"``); SGD gets
    ``momentum``, the others their default hyper-parameters besides ``learning_rate``."""
    key = name.lower()
    if key not in optimizers.OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; expected one of {sorted(optimizers.OPTIMIZERS)}")
    if key == "sgd":
        return optimizers.SGD(learning_rate, momentum=momentum)
    return optimizers.OPTIMIZERS[key](learning_rate)


def build_model(
    name: str,
    optimizer: Optional[str] = None,
    learning_rate: Optional[float] = None,
    seed: Optional[int] = None,
    schedule: Optional[str] = None,
    total_steps: Optional[int] = None,
) -> Sequential:
    """A compiled model of preset ``name``; the other arguments override the preset's defaults.

    A ``"cosine"`` schedule decays the learning rate to 0 over ``total_steps`` updates (epochs
    times batches per epoch) and needs them; ``"constant"`` ignores ``total_steps``.
    """
    preset = get_preset(name)
    schedule = schedule or preset.schedule
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; expected one of {', '.join(SCHEDULES)}")
    learning_rate = preset.learning_rate if learning_rate is None else learning_rate
    if schedule == "cosine":
        if total_steps is None:
            raise ValueError("the cosine schedule needs total_steps (epochs x batches per epoch)")
        learning_rate = CosineDecay(learning_rate, total_steps)
    model = Sequential(preset.layers(), name=preset.name, seed=seed)
    model.compile(
        optimizer=make_optimizer(optimizer or preset.optimizer, learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model
