"""Command line: ``python -m cnnext`` or ``cnnext``.

Subcommands: ``train`` (a preset on Fashion-MNIST), ``evaluate MODEL``, ``predict MODEL
IMAGES...``, ``summary MODEL``, ``info``. Every failure a user can cause (missing data, a bad
model file, a wrong image, a bad argument) ends with one ``cnnext: error: ...`` line on stderr and
exit status 1 (2 for command-line usage errors, 130 after Ctrl-C); never with a traceback.
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from . import datasets, optimizers, presets
from ._config import set_num_threads, show_config
from .backend import set_backend
from .callbacks import Callback
from .io import check_writable, load_model
from .plotting import plot_history

IMAGE_SHAPE = (28, 28)
PREDICT_BATCH = 256


class UsageError(Exception):
    """A bad command line (exit status 2)."""


class CLIError(Exception):
    """A user-facing failure with a one-line message (exit status 1)."""


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing the usage and exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _int_at_least(minimum: int, description: str) -> Callable[[str], int]:
    """An argparse ``type``: an integer ``>= minimum``, else a usage error expecting
    ``description``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {description}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {description}, got {text!r}")
        return value

    return parse


_positive_int = _int_at_least(1, "a positive integer")
_non_negative_int = _int_at_least(0, "an integer >= 0")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


# ------------------------------------------------------------------------------------ helpers
def _configure(args: argparse.Namespace) -> None:
    """Apply ``--threads`` and ``--backend``."""
    if args.threads is not None:
        set_num_threads(args.threads)
    if args.backend is not None:
        set_backend(args.backend)


def _load_data(path: Optional[str]) -> datasets.Splits:
    splits = datasets.load_fashion_mnist(path)
    (x, _), (xt, _) = splits
    print(f"data: Fashion-MNIST from {splits.source} ({len(x)} training, {len(xt)} test images)")
    return splits


def _subsample(x: np.ndarray, y: np.ndarray, limit: Optional[int], seed: Optional[int]):
    """At most ``limit`` samples drawn without replacement (all of them when ``limit`` is None)."""
    if limit is None or limit >= len(x):
        return x, y
    index = np.sort(np.random.default_rng(seed).choice(len(x), limit, replace=False))
    return x[index], y[index]


def _load_model(path: str) -> Any:
    if not Path(path).exists():
        raise CLIError(f"{path}: no such model file")
    return load_model(path)


def _accuracy(model: Any, x: np.ndarray, y: np.ndarray) -> float:
    probabilities = model.predict(presets.prepare_images(x), batch_size=PREDICT_BATCH)
    return float(np.mean(np.argmax(probabilities, axis=-1) == y))


class _EpochReport(Callback):
    """After each epoch prints its training time (the batches only) and the test accuracy."""

    def on_epoch_begin(self, epoch: int, logs: Optional[dict] = None) -> None:
        self.start = self.last_batch_end = time.perf_counter()

    def on_batch_end(self, batch: int, logs: Optional[dict] = None) -> None:
        self.last_batch_end = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: Optional[dict] = None) -> None:
        seconds = self.last_batch_end - self.start
        accuracy = (logs or {}).get("val_accuracy", float("nan"))
        print(f"epoch {epoch + 1}: train {seconds:.1f} s, test accuracy {accuracy:.4f}", flush=True)


# ----------------------------------------------------------------------------------- commands
def cmd_train(args: argparse.Namespace) -> int:
    preset = presets.get_preset(args.preset)
    _configure(args)
    check_writable(args.output)  # fail before training, not after
    check_writable(args.curve)
    (x, y), (xt, yt) = _load_data(args.data)
    x, y = _subsample(x, y, args.limit, args.seed)
    xt, yt = _subsample(xt, yt, args.limit, args.seed)
    epochs = args.epochs or preset.epochs
    batch_size = args.batch_size or preset.batch_size
    model = presets.build_model(preset.name, args.optimizer, args.lr, args.seed, args.schedule,
                                total_steps=epochs * -(-len(x) // batch_size))
    learning_rate = args.lr or preset.learning_rate
    schedule = args.schedule or preset.schedule
    print(f"train: {preset.name} ({preset.description}); {type(model.optimizer).__name__} "
          f"lr {learning_rate} ({schedule}), batch {batch_size}, {epochs} epochs, "
          f"{len(x)} training / {len(xt)} test images")
    history = model.fit(presets.prepare_images(x), y, epochs=epochs, batch_size=batch_size,
                        validation_data=(presets.prepare_images(xt), yt),
                        callbacks=[_EpochReport()], verbose=1, seed=args.seed)
    print(f"test accuracy: {history.history['val_accuracy'][-1]:.4f}")
    model.save(args.output)
    print(f"model saved to {args.output}")
    _plot(history, args.curve)
    return 0


def _plot(history: Any, path: str) -> None:
    try:
        plot_history(history, path)
    except ImportError:
        print("training curve skipped: matplotlib is not installed (pip install cnnext[plot])")
        return
    print(f"training curve saved to {path}")


def cmd_evaluate(args: argparse.Namespace) -> int:
    _configure(args)
    model = _load_model(args.model)
    _, (xt, yt) = _load_data(args.data)
    xt, yt = _subsample(xt, yt, args.limit, seed=0)
    print(f"test accuracy: {_accuracy(model, xt, yt):.4f} ({len(xt)} images)")
    return 0


def read_image(path: str) -> np.ndarray:
    """A 28x28 grayscale image from ``.png`` (needs Pillow) or ``.npy`` (uint8 0..255 or floats
    in ``[0, 1]``), as the ``(28, 28, 1)`` float32 model input (:func:`presets.prepare_images`)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".npy":
        image = _read_npy(path)
    elif suffix == ".png":
        image = _read_png(path)
    else:
        raise CLIError(f"{path}: unsupported image type {suffix or '(none)'!r}; use .png or .npy")
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.shape != IMAGE_SHAPE:
        raise CLIError(f"{path}: expected a 28x28 grayscale image, got shape {image.shape}")
    if image.dtype != np.uint8 and (image.dtype.kind != "f" or not (
            np.isfinite(image).all() and 0 <= image.min() <= image.max() <= 1)):
        raise CLIError(f"{path}: expected uint8 pixels or floats in [0, 1], got {image.dtype} values")
    return presets.prepare_images(image[..., None])


def _read_npy(path: str) -> np.ndarray:
    """The array stored in the .npy file ``path`` (never unpickled)."""
    try:
        with open(path, "rb") as f:
            return np.lib.format.read_array(f, allow_pickle=False)
    except (EOFError, ValueError) as exc:  # empty, garbage, a .npz/zip archive, pickled objects
        raise CLIError(f"{path}: not a readable .npy image ({exc})") from None


def _read_png(path: str) -> np.ndarray:
    """The grayscale pixels of the PNG ``path``; an image over Pillow's decompression-bomb pixel
    limit is refused before it is decoded."""
    try:
        from PIL import Image
    except ImportError:
        raise CLIError("reading PNG images needs Pillow (pip install pillow); "
                       "or pass .npy arrays") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as picture:
                return np.asarray(picture.convert("L"))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise CLIError(f"{path}: image too large to read ({exc})") from None


def cmd_predict(args: argparse.Namespace) -> int:
    _configure(args)
    model = _load_model(args.model)
    images = np.stack([read_image(path) for path in args.images])
    probabilities = model.predict(images, batch_size=PREDICT_BATCH)
    names = datasets.FASHION_MNIST_CLASSES if probabilities.shape[-1] == 10 else None
    for path, row in zip(args.images, probabilities):
        k = int(np.argmax(row))
        label = f" ({names[k]})" if names else ""
        print(f"{path}: class {k}{label} probability {row[k]:.4f}")
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    _load_model(args.model).summary()
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    show_config()
    return 0


# ------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cnnext", description="Train and use small CNNs on Fashion-MNIST.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    runtime = _Parser(add_help=False)
    runtime.add_argument("--threads", type=_positive_int, help="kernel and BLAS threads")
    runtime.add_argument("--backend", choices=["cython", "numpy"], help="kernel backend")
    data = _Parser(add_help=False)
    data.add_argument("--data", metavar="PATH", help="Fashion-MNIST directory or .npz "
                      "(default: $CNNEXT_FASHION_MNIST, /usr/share/datasets/fashion-mnist, "
                      "then the bundled sample)")
    data.add_argument("--limit", type=_positive_int, metavar="N",
                      help="use at most N randomly drawn images per split")

    train = commands.add_parser("train", parents=[runtime, data], help="train a preset model")
    train.add_argument("--preset", default="lenet5", choices=presets.PRESETS,
                       help="architecture (default lenet5)")
    train.add_argument("--epochs", type=_positive_int, help="default: the preset's")
    train.add_argument("--batch-size", type=_positive_int, help="default: the preset's")
    train.add_argument("--optimizer", type=str.lower, choices=sorted(optimizers.OPTIMIZERS),
                       help="sgd (momentum 0.9), adam, adamw or rmsprop (default: the preset's)")
    train.add_argument("--lr", type=_positive_float, help="learning rate (default: the preset's)")
    train.add_argument("--schedule", choices=presets.SCHEDULES,
                       help="learning-rate schedule: constant, or cosine decay to 0 over the run "
                       "(default: the preset's)")
    train.add_argument("--seed", type=_non_negative_int, default=0,
                       help="weights, shuffling and --limit seed")
    train.add_argument("--output", default="model.npz", help="model file (default model.npz)")
    train.add_argument("--curve", default="training_curve.png",
                       help="training-curve PNG (default training_curve.png)")
    train.set_defaults(handler=cmd_train)

    evaluate = commands.add_parser("evaluate", parents=[runtime, data],
                                   help="test accuracy of a saved model")
    evaluate.add_argument("model")
    evaluate.set_defaults(handler=cmd_evaluate)

    predict = commands.add_parser("predict", parents=[runtime],
                                  help="classify 28x28 grayscale PNG/NPY images")
    predict.add_argument("model")
    predict.add_argument("images", nargs="+", metavar="IMAGE")
    predict.set_defaults(handler=cmd_predict)

    summary = commands.add_parser("summary", help="print a saved model's layers")
    summary.add_argument("model")
    summary.set_defaults(handler=cmd_summary)

    info = commands.add_parser("info", help="build and runtime configuration")
    info.set_defaults(handler=cmd_info)
    return parser


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror and exc.filename:
        return f"{exc.filename}: {exc.strerror}"
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
        return args.handler(args)
    except UsageError as exc:
        print(f"cnnext: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cnnext: error: interrupted", file=sys.stderr)
        return 130
    except (CLIError, ValueError, TypeError, OSError, ImportError, MemoryError) as exc:
        print(f"cnnext: error: {_one_line(exc)}", file=sys.stderr)
        return 1
