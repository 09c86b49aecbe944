"""What every example script shares: its command line, the data, and the optional outputs."""
from __future__ import annotations

import argparse
import os
from typing import Any

import numpy as np

from cnnext.datasets import load_fashion_mnist
from cnnext.preprocessing import one_hot, to_float


def parse_args(description: str, epochs: int = 2, train: int = 1000, val: int = 200) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--epochs", type=int, default=epochs, help=f"training epochs (default {epochs})")
    parser.add_argument("--train", type=int, default=train, help=f"training images (default {train})")
    parser.add_argument("--val", type=int, default=val, help=f"validation images (default {val})")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--save", metavar="PATH", help="save the trained model to PATH")
    parser.add_argument("--plots", metavar="DIR", help="write training curves and filters as PNGs to DIR")
    return parser.parse_args()


def standardize(images: np.ndarray) -> np.ndarray:
    """uint8 images ``(N, 28, 28, 1)`` -> float32, each image to zero mean and unit variance."""
    x = to_float(images)
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    std = x.std(axis=(1, 2, 3), keepdims=True)
    return (x - mean) / np.maximum(std, 1e-6)


def load_data(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The first ``args.train`` training and ``args.val`` test images of Fashion-MNIST (the full
    set when installed, else the sample bundled with cnnext), standardized, labels one-hot."""
    splits = load_fashion_mnist()
    (x_train, y_train), (x_test, y_test) = splits
    print(f"Fashion-MNIST from {splits.source}: using {args.train} training and {args.val} "
          "validation images")
    return (standardize(x_train[: args.train]), one_hot(y_train[: args.train], 10),
            standardize(x_test[: args.val]), one_hot(y_test[: args.val], 10))


def train(model: Any, args: argparse.Namespace) -> Any:
    """Print the summary, fit on the data, then save the model and plots when asked."""
    model.summary()
    x, y, x_val, y_val = load_data(args)
    history = model.fit(x, y, epochs=args.epochs, batch_size=args.batch_size,
                        validation_data=(x_val, y_val), verbose=1)
    if args.save:
        os.makedirs(os.path.dirname(os.path.abspath(args.save)), exist_ok=True)
        model.save(args.save)
        print(f"model saved to {args.save}")
    if args.plots:
        from cnnext.plotting import plot_feature_maps, plot_filters, plot_history

        os.makedirs(args.plots, exist_ok=True)
        print("wrote", plot_history(history, os.path.join(args.plots, "history.png")))
        print("wrote", plot_filters(model, os.path.join(args.plots, "filters.png")))
        print("wrote", plot_feature_maps(model, 0, x_val[0], os.path.join(args.plots, "feature_maps.png")))
    return history
