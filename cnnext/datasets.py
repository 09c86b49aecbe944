"""Image classification data sets: an IDX reader, Fashion-MNIST and MNIST loaders.

IDX is the format of MNIST and Fashion-MNIST: a 4-byte magic number ``0x00 0x00 <type> <ndim>``,
``ndim`` big-endian uint32 dimension sizes, then the payload in row-major order. Files may be
gzip-compressed (``.gz``); compression is detected from the content, not the name.

Loaders return ``((x_train, y_train), (x_test, y_test))`` with images ``(N, 28, 28, 1)`` uint8
(0..255) and labels ``(N,)`` int64 (0..9). Fashion-MNIST is searched in this order:

1. the ``path`` argument (a directory holding the four IDX files, or an ``.npz`` file);
2. the directory or ``.npz`` named by the environment variable ``CNNEXT_FASHION_MNIST``;
3. ``/usr/share/datasets/fashion-mnist`` (Debian: ``apt-get install dataset-fashion-mnist``);
4. the sample bundled with cnnext (5,000 training and 1,000 test images, see
   ``cnnext/data/LICENSE-fashion-mnist.txt``).

MNIST digits follow steps 1-3 with ``CNNEXT_MNIST`` and ``/usr/share/datasets/mnist``; cnnext
bundles no digits. The returned :class:`Splits` tuple says in ``.source`` which one was used.
"""
from __future__ import annotations

import gzip
import math
import os
import zipfile
import zlib
from pathlib import Path
from typing import IO, Union

import numpy as np

from ._config import physical_memory

PathLike = Union[str, "os.PathLike[str]"]

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
MNIST_CLASSES = tuple(str(digit) for digit in range(10))

FASHION_MNIST_ENV = "CNNEXT_FASHION_MNIST"
MNIST_ENV = "CNNEXT_MNIST"
SYSTEM_DIRS = {
    "fashion-mnist": Path("/usr/share/datasets/fashion-mnist"),
    "mnist": Path("/usr/share/datasets/mnist"),
}
BUNDLED_FASHION_MNIST = Path(__file__).resolve().parent / "data" / "fashion_mnist_sample.npz"

# IDX type code -> big-endian numpy dtype
IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
# split -> (images file stem, labels file stem); files may end in .gz
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
IMAGE_SHAPE = (28, 28)
NUM_CLASSES = 10
# An IDX payload is read in pieces of this many bytes, so that a gzip stream longer than its
# header declares is never decompressed beyond one piece past the declared size.
READ_CHUNK = 1 << 24


class DatasetError(ValueError):
    """A data file is missing, truncated, foreign or inconsistent; the message names the file."""


class Splits(tuple):
    """``((x_train, y_train), (x_test, y_test))`` plus ``source``: where the arrays came from."""

    source: str

    def __new__(cls, train: tuple, test: tuple, source: str) -> "Splits":
        splits = super().__new__(cls, (train, test))
        splits.source = source
        return splits


def _special(path: Path) -> bool:
    """A FIFO, socket or device (links followed): reading one would block or never end. False
    when the path cannot be examined: opening it then reports why."""
    try:
        return path.exists() and not path.is_file() and not path.is_dir()
    except OSError:
        return False


def _open(path: Path) -> IO[bytes]:
    """The file for reading, through a gzip stream when it starts with the magic ``1f 8b``."""
    if _special(path):
        raise DatasetError(f"{path}: not a regular file, expected an IDX file")
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DatasetError(f"{path}: is a directory, expected an IDX file") from None
    except OSError as exc:
        raise DatasetError(f"{path}: cannot be read ({exc.strerror})") from None
    if f.read(2) == b"\x1f\x8b":
        f.seek(0)
        return gzip.GzipFile(fileobj=f, mode="rb")
    f.seek(0)
    return f


def _read_at_most(f: IO[bytes], n: int) -> bytes:
    """Up to ``n`` bytes of ``f`` (fewer at its end), read in pieces of ``READ_CHUNK``."""
    pieces = []
    while n > 0:
        piece = f.read(min(n, READ_CHUNK))
        if not piece:
            break
        pieces.append(piece)
        n -= len(piece)
    return b"".join(pieces)


def read_idx(path: PathLike) -> np.ndarray:
    """Read one IDX file (raw or gzip) into an array in native byte order.

    Raises :class:`DatasetError` naming the file when the magic number, the type code, the
    dimensions or the payload length is wrong, or when the declared payload exceeds this
    machine's memory. The header is checked first, and no more than the declared payload plus
    one piece is ever read or decompressed (a gzip bomb stops there).
    """
    path = Path(path)
    with _open(path) as f:
        try:
            return _parse_idx(path, f)
        except (EOFError, OSError, zlib.error) as exc:
            raise DatasetError(f"{path}: corrupt or truncated gzip data ({exc})") from None


def _parse_idx(path: Path, f: IO[bytes]) -> np.ndarray:
    head = f.read(4)
    if len(head) < 4:
        raise DatasetError(f"{path}: {len(head)} bytes is too short for an IDX header")
    zero, type_code, ndim = int.from_bytes(head[:2], "big"), head[2], head[3]
    if zero != 0:
        raise DatasetError(
            f"{path}: not an IDX file (magic number 0x{head.hex()}, expected 0x0000TTDD)"
        )
    if type_code not in IDX_DTYPES:
        raise DatasetError(f"{path}: unknown IDX type code 0x{type_code:02x}")
    if not 0 < ndim <= 32:  # numpy 1.x arrays hold at most 32 dimensions
        raise DatasetError(f"{path}: IDX header declares {ndim} dimensions (1 to 32 supported)")
    dims = f.read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise DatasetError(f"{path}: truncated IDX header ({4 + len(dims)} of {4 + 4 * ndim} "
                           "bytes)")
    shape = tuple(int(d) for d in np.frombuffer(dims, dtype=">u4"))
    dtype = IDX_DTYPES[type_code]
    expected = math.prod(shape) * dtype.itemsize
    _check_fits_memory(path, shape, expected)
    data = _read_at_most(f, expected + 1)
    if len(data) != expected:
        problem = "truncated" if len(data) < expected else "has trailing data"
        found = f"{len(data)}" if len(data) < expected else "more"
        raise DatasetError(
            f"{path}: {problem}: dimensions {shape} need {expected} payload bytes, found {found}"
        )
    return np.frombuffer(data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def _check_fits_memory(path: Path, shape: tuple, nbytes: int) -> None:
    """DatasetError when an IDX payload of ``nbytes`` could not be held in physical memory."""
    memory = physical_memory()
    if memory is not None and nbytes > memory:
        raise DatasetError(f"{path}: dimensions {shape} declare {nbytes} payload bytes, more than "
                           f"this machine's {memory} bytes of memory")


def _find_idx(directory: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (directory / name).is_file():
            return directory / name
    raise DatasetError(f"{directory}: missing {stem} (or {stem}.gz)")


def _check_split(images: np.ndarray, labels: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate one split and convert it to ``(N, 28, 28, 1)`` uint8 and ``(N,)`` int64 (images
    may come as ``(N, 28, 28)`` or, as the loaders return them, ``(N, 28, 28, 1)``)."""
    if images.ndim == 4 and images.shape[3] == 1:
        images = images[..., 0]
    if images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE or images.dtype != np.uint8:
        raise DatasetError(
            f"{what}: images must be uint8 of shape (N, 28, 28), got {images.dtype} "
            f"{images.shape} ((N, 28, 28, 1) is accepted too)"
        )
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DatasetError(f"{what}: labels must be a 1-D integer array, got {labels.dtype} {labels.shape}")
    if len(images) != len(labels):
        raise DatasetError(f"{what}: {len(images)} images but {len(labels)} labels")
    if len(images) == 0:
        raise DatasetError(f"{what}: no images")
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise DatasetError(f"{what}: labels must lie in 0..{NUM_CLASSES - 1}")
    return np.ascontiguousarray(images[..., None]), labels.astype(np.int64)


def _load_idx_dir(directory: Path) -> tuple:
    splits = []
    for split, (image_stem, label_stem) in IDX_FILES.items():
        image_path, label_path = _find_idx(directory, image_stem), _find_idx(directory, label_stem)
        what = f"{image_path} / {label_path.name}"
        splits.append(_check_split(read_idx(image_path), read_idx(label_path), what))
    return tuple(splits)


def _load_npz(path: Path) -> tuple:
    if not zipfile.is_zipfile(path):  # np.load would read a .npy (or a pickle) as well
        raise DatasetError(f"{path}: not a readable .npz file (not a zip archive)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in NPZ_KEYS if key not in archive.files]
            if missing:
                raise DatasetError(f"{path}: missing arrays {missing} (expected {list(NPZ_KEYS)})")
            arrays = {key: archive[key] for key in NPZ_KEYS}
    except DatasetError:
        raise
    except MemoryError as exc:
        raise DatasetError(f"{path}: an array is too large for this machine's memory ({exc})") \
            from None
    # zipfile and numpy report damaged archives with these (a bad CRC, an unknown compression
    # method, an encrypted member, a malformed .npy header)
    except (OSError, EOFError, zlib.error, zipfile.BadZipFile, NotImplementedError,
            RuntimeError, ValueError) as exc:
        raise DatasetError(f"{path}: not a readable .npz file ({exc})") from None
    return (
        _check_split(arrays["x_train"], arrays["y_train"], f"{path} (train)"),
        _check_split(arrays["x_test"], arrays["y_test"], f"{path} (test)"),
    )


def load_from(path: PathLike) -> Splits:
    """Load a directory of the four IDX files, or an ``.npz`` with ``x_train``... arrays."""
    path = Path(path).expanduser()
    if path.is_dir():
        train, test = _load_idx_dir(path)
    elif path.is_file():
        train, test = _load_npz(path)
    elif _special(path):
        raise DatasetError(f"{path}: not a regular file or a directory; give an .npz file or a "
                           "directory of IDX files")
    else:
        raise DatasetError(f"{path}: no such file or directory")
    return Splits(train, test, str(path))


def _has_idx_files(directory: Path) -> bool:
    try:
        for stems in IDX_FILES.values():
            for stem in stems:
                _find_idx(directory, stem)
    except DatasetError:
        return False
    return True


def _load(name: str, path: PathLike | None, env: str, bundled: Path | None) -> Splits:
    if path is not None:
        return load_from(path)
    if os.environ.get(env):
        return load_from(os.environ[env])
    system_dir = SYSTEM_DIRS[name]
    if _has_idx_files(system_dir):
        return load_from(system_dir)
    if bundled is not None:
        splits = load_from(bundled)
        return Splits(splits[0], splits[1], f"{bundled} (bundled sample)")
    raise DatasetError(
        f"{name} not found: pass a path, set {env}, or install the files in {system_dir}"
    )


def load_fashion_mnist(path: PathLike | None = None) -> Splits:
    """Fashion-MNIST as ``((x_train, y_train), (x_test, y_test))``; see the module docstring for
    the search order. ``x`` is ``(N, 28, 28, 1)`` uint8, ``y`` is ``(N,)`` int64."""
    return _load("fashion-mnist", path, FASHION_MNIST_ENV, BUNDLED_FASHION_MNIST)


def load_mnist(path: PathLike | None = None) -> Splits:
    """MNIST digits, searched in ``path``, ``$CNNEXT_MNIST``, then ``/usr/share/datasets/mnist``."""
    return _load("mnist", path, MNIST_ENV, None)
