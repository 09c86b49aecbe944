"""The PyTorch twins of the benchmark networks (NCHW, float32), layer for layer."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn


def lenet5() -> nn.Module:
    """conv 6@5x5 pad 2, relu, maxpool 2, conv 16@5x5, relu, maxpool 2, dense 120, 84, 10."""
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120), nn.ReLU(),
        nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, 10),
    )


def test4() -> nn.Module:
    """conv 4@3x3 relu, conv 8@3x3 relu, maxpool 2, dense 64 relu, dropout 0.1, dense 10."""
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.ReLU(),
        nn.Conv2d(4, 8, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * 12 * 12, 64), nn.ReLU(), nn.Dropout(0.1),
        nn.Linear(64, 10),  # softmax is folded into the cross-entropy loss
    )


OPTIMIZERS: dict[str, Callable[[list[nn.Parameter]], torch.optim.Optimizer]] = {
    "sgd_momentum": lambda params: torch.optim.SGD(params, lr=0.01, momentum=0.9),
    "adam": lambda params: torch.optim.Adam(params, lr=0.01),
}
BUILDERS = {"lenet5": lenet5, "test4": test4}


class TorchRunner:
    """One network with its optimizer; steps take NHWC numpy batches, converted to NCHW tensors."""

    library = "torch"

    def __init__(self, net: str, optimizer: str) -> None:
        torch.manual_seed(0)
        self.model = BUILDERS[net]()
        self.optimizer = OPTIMIZERS[optimizer](list(self.model.parameters()))
        self.loss = nn.CrossEntropyLoss()

    @staticmethod
    def prepare(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 28, 28, 1) float32 images and int labels -> NCHW tensor and int64 label tensor."""
        return (torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))),
                torch.from_numpy(y.astype(np.int64)))

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        self.loss(self.model(x), y).backward()
        self.optimizer.step()

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        self.model.eval()
        with torch.inference_mode():
            return self.model(x)
