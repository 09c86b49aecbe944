"""The benchmark networks built with cnnext's Keras-like API (NHWC, float32)."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from cnnext import Sequential, layers, optimizers


def lenet5() -> Sequential:
    """conv 6@5x5 pad 2, relu, maxpool 2, conv 16@5x5, relu, maxpool 2, dense 120, 84, 10."""
    return Sequential(seed=0, layers=[
        layers.Conv2D(6, 5, padding=2, activation="relu", input_shape=(28, 28, 1)),
        layers.MaxPool2D(2),
        layers.Conv2D(16, 5, activation="relu"),
        layers.MaxPool2D(2),
        layers.Flatten(),
        layers.Dense(120, activation="relu"),
        layers.Dense(84, activation="relu"),
        layers.Dense(10, activation="softmax"),  # fused with the cross-entropy
    ])


def test4() -> Sequential:
    """conv 4@3x3 relu, conv 8@3x3 relu, maxpool 2, dense 64 relu, dropout 0.1, dense 10 softmax."""
    return Sequential(seed=0, layers=[
        layers.Conv2D(4, 3, activation="relu", input_shape=(28, 28, 1)),
        layers.Conv2D(8, 3, activation="relu"),
        layers.MaxPool2D(2),
        layers.Flatten(),
        layers.Dense(64, activation="relu"),
        layers.Dropout(0.1),
        layers.Dense(10, activation="softmax"),
    ])


OPTIMIZERS: dict[str, Callable[[], optimizers.Optimizer]] = {
    "sgd_momentum": lambda: optimizers.SGD(learning_rate=0.01, momentum=0.9),
    "adam": lambda: optimizers.Adam(learning_rate=0.01),
}
BUILDERS = {"lenet5": lenet5, "test4": test4}


class CnnextRunner:
    """One compiled network; steps take the NHWC numpy batches as they are."""

    library = "cnnext"

    def __init__(self, net: str, optimizer: str) -> None:
        self.model = BUILDERS[net]()
        self.model.compile(optimizer=OPTIMIZERS[optimizer](),
                           loss="sparse_categorical_crossentropy")

    @staticmethod
    def prepare(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return x, y

    def train_step(self, x: np.ndarray, y: np.ndarray) -> Any:
        return self.model.train_on_batch(x, y)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.model.predict(x, batch_size=len(x))
