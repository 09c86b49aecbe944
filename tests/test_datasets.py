"""IDX reader and the Fashion-MNIST / MNIST loaders (search order, validation, bundled sample)."""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest

from cnnext import datasets
from cnnext.datasets import DatasetError, load_fashion_mnist, load_from, load_mnist, read_idx

TYPE_CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D,
              np.float64: 0x0E}


def idx_bytes(array: np.ndarray, type_code: int | None = None) -> bytes:
    """Serialise ``array`` as IDX: 0x0000, type code, ndim, big-endian dims, big-endian payload."""
    code = TYPE_CODES[array.dtype.type] if type_code is None else type_code
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> Path:
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def write_idx_dir(directory: Path, n_train: int, n_test: int, seed: int = 0,
                  n_train_labels: int | None = None, gz: bool = True) -> Path:
    """Four Fashion-MNIST-style files of random images/labels in ``directory``."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    n_labels = {"train": n_train if n_train_labels is None else n_train_labels, "test": n_test}
    for split, n in (("train", n_train), ("test", n_test)):
        image_stem, label_stem = datasets.IDX_FILES[split]
        write_idx(directory / (image_stem + suffix), rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), gz)
        write_idx(directory / (label_stem + suffix), rng.integers(0, 10, n_labels[split], dtype=np.uint8), gz)
    return directory


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dtype", list(TYPE_CODES))
def test_read_idx_round_trips_every_type(tmp_path, gz, dtype):
    rng = np.random.default_rng(1)
    array = (rng.standard_normal((3, 4, 5)) * 100).astype(dtype)
    result = read_idx(write_idx(tmp_path / "a.idx", array, gz))
    assert result.dtype == np.dtype(dtype)  # native byte order
    np.testing.assert_array_equal(result, array)


def test_read_idx_one_dimensional_labels(tmp_path):
    labels = np.array([3, 1, 4, 1, 5, 9], dtype=np.uint8)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "l", labels)), labels)


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_payload_is_reported(tmp_path, gz):
    data = idx_bytes(np.zeros((10, 28, 28), np.uint8))[:-100]
    path = tmp_path / "cut.idx"
    path.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(DatasetError, match=r"cut\.idx: truncated.*7840 payload bytes, found 7740"):
        read_idx(path)


def test_truncated_gzip_stream_is_reported(tmp_path):
    path = tmp_path / "cut.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.arange(1000, dtype=np.uint8).reshape(10, 100)))[:-30])
    with pytest.raises(DatasetError, match="cut.gz: corrupt or truncated gzip"):
        read_idx(path)


def test_truncated_header_is_reported(tmp_path):
    path = tmp_path / "h.idx"
    path.write_bytes(bytes([0, 0, 8, 3]) + b"\x00\x00\x00\x0a")
    with pytest.raises(DatasetError, match="truncated IDX header"):
        read_idx(path)


def test_trailing_data_is_reported(tmp_path):
    path = tmp_path / "long.idx"
    path.write_bytes(idx_bytes(np.zeros((2, 3), np.uint8)) + b"\x00")
    with pytest.raises(DatasetError, match="trailing data"):
        read_idx(path)


@pytest.mark.parametrize("content", [b"\x89PNG\r\n\x1a\n" + bytes(50), b"\x08\x03\x00\x00" + bytes(20)])
def test_wrong_magic_is_reported(tmp_path, content):
    path = tmp_path / "foreign.bin"
    path.write_bytes(content)
    with pytest.raises(DatasetError, match=r"foreign\.bin: not an IDX file \(magic number 0x"):
        read_idx(path)


def test_wrong_type_code_is_reported(tmp_path):
    path = tmp_path / "t.idx"
    path.write_bytes(idx_bytes(np.zeros(4, np.uint8), type_code=0x0A))
    with pytest.raises(DatasetError, match="unknown IDX type code 0x0a"):
        read_idx(path)


def test_gzip_bomb_is_refused_after_reading_one_piece_past_its_header(tmp_path, monkeypatch):
    """A header declaring 4 bytes before 64 MiB of zeros: at most the payload plus one piece
    (READ_CHUNK, here 1 MiB) is ever decompressed."""
    monkeypatch.setattr(datasets, "READ_CHUNK", 1 << 20)
    path = tmp_path / "bomb.gz"
    with gzip.open(path, "wb") as f:
        f.write(idx_bytes(np.zeros(4, np.uint8)))
        for _ in range(64):
            f.write(bytes(1 << 20))
    read = []
    real_read = gzip.GzipFile.read
    monkeypatch.setattr(gzip.GzipFile, "read",
                        lambda self, n=-1: read.append(n) or real_read(self, n))
    with pytest.raises(DatasetError, match=r"bomb\.gz: has trailing data: .* 4 payload bytes"):
        read_idx(path)
    assert sum(read) <= 4 + 4 + 5  # the header, its one dimension, the payload and one byte more


@pytest.mark.parametrize("dims, match", [
    ((1 << 32) - 1, (1 << 32) - 1),  # 2**64 bytes: more than any machine's memory
    ((65536,) * 4, None),  # the product wraps to 0 in int64
])
def test_huge_declared_dimensions_are_refused_before_reading(tmp_path, dims, match):
    dims = dims if isinstance(dims, tuple) else (dims, dims)
    path = tmp_path / "huge.idx"
    path.write_bytes(bytes([0, 0, 8, len(dims)]) + np.asarray(dims, ">u4").tobytes() + bytes(8))
    with pytest.raises(DatasetError, match=r"huge\.idx: dimensions .* declare \d+ payload bytes, "
                                           r"more than this machine's"):
        read_idx(path)


def test_more_dimensions_than_numpy_holds_are_refused(tmp_path):
    path = tmp_path / "deep.idx"
    path.write_bytes(bytes([0, 0, 8, 255]) + np.ones(255, ">u4").tobytes() + b"\x07")
    with pytest.raises(DatasetError, match=r"deep\.idx: IDX header declares 255 dimensions"):
        read_idx(path)


@pytest.mark.parametrize("content", [b"", b"\x00\x00"])
def test_too_short_file_is_reported(tmp_path, content):
    path = tmp_path / "short"
    path.write_bytes(content)
    with pytest.raises(DatasetError, match="too short"):
        read_idx(path)


def test_missing_file_is_a_dataset_error_and_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="nope.idx: no such file"):
        read_idx(tmp_path / "nope.idx")


@pytest.mark.parametrize("gz", [False, True])
def test_load_from_idx_directory(tmp_path, gz):
    splits = load_from(write_idx_dir(tmp_path / "fm", 12, 5, gz=gz))
    (x, y), (xt, yt) = splits
    assert x.shape == (12, 28, 28, 1) and x.dtype == np.uint8
    assert xt.shape == (5, 28, 28, 1) and yt.shape == (5,)
    assert y.dtype == np.int64 and yt.dtype == np.int64
    assert splits.source == str(tmp_path / "fm")
    raw = read_idx(next((tmp_path / "fm").glob("train-images*")))
    np.testing.assert_array_equal(x[..., 0], raw)


def test_image_label_count_mismatch_is_reported(tmp_path):
    directory = write_idx_dir(tmp_path / "bad", 12, 5, n_train_labels=11)
    with pytest.raises(DatasetError, match="12 images but 11 labels"):
        load_from(directory)


def test_missing_file_in_directory_is_reported(tmp_path):
    directory = write_idx_dir(tmp_path / "part", 4, 4)
    (directory / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetError, match="missing t10k-labels-idx1-ubyte"):
        load_from(directory)


def test_wrong_image_size_is_reported(tmp_path):
    directory = write_idx_dir(tmp_path / "size", 4, 4)
    write_idx(directory / "train-images-idx3-ubyte.gz", np.zeros((4, 32, 32), np.uint8), gz=True)
    with pytest.raises(DatasetError, match=r"shape \(N, 28, 28\), got uint8 \(4, 32, 32\)"):
        load_from(directory)


def test_label_out_of_range_is_reported(tmp_path):
    directory = write_idx_dir(tmp_path / "labels", 4, 4)
    write_idx(directory / "t10k-labels-idx1-ubyte.gz", np.array([0, 1, 2, 10], np.uint8), gz=True)
    with pytest.raises(DatasetError, match="labels must lie in 0..9"):
        load_from(directory)


def test_npz_with_missing_arrays_is_reported(tmp_path):
    path = tmp_path / "part.npz"
    np.savez(path, x_train=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(DatasetError, match="missing arrays"):
        load_from(path)


def test_foreign_file_as_npz_is_reported(tmp_path):
    path = tmp_path / "junk.npz"
    path.write_bytes(b"definitely not a zip archive")
    with pytest.raises(DatasetError, match="junk.npz: not a readable .npz"):
        load_from(path)


def _good_npz(tmp_path) -> Path:
    rng = np.random.default_rng(4)
    arrays = {"x_train": rng.integers(0, 256, (3, 28, 28), dtype=np.uint8),
              "y_train": np.arange(3), "x_test": np.zeros((2, 28, 28), np.uint8),
              "y_test": np.arange(2)}
    np.savez(tmp_path / "good.npz", **arrays)
    return tmp_path / "good.npz"


@pytest.mark.parametrize("damage", ["truncated", "crc", "method", "encrypted", "npy"])
def test_damaged_npz_archives_are_dataset_errors(tmp_path, damage):
    """Damage that zipfile reports as BadZipFile, NotImplementedError or RuntimeError, and a
    plain .npy (which np.load would read as an array)."""
    data = bytearray(_good_npz(tmp_path).read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "crc":
        data[data.index(b"x_train.npy") + 200] ^= 0xFF
    elif damage in ("method", "encrypted"):  # the first member's central directory entry
        entry = data.index(b"PK\x01\x02")
        if damage == "method":
            data[entry + 10] = 99
        else:
            data[entry + 8] |= 1
    else:
        np.save(tmp_path / "plain.npy", np.zeros(3))
        data = (tmp_path / "plain.npy").read_bytes()
    path = tmp_path / "damaged.npz"
    path.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=r"damaged\.npz: not a readable \.npz file"):
        load_from(path)


def test_npz_images_may_carry_the_channel_axis_the_loaders_return(tmp_path):
    (x, y), (xt, yt) = load_from(_good_npz(tmp_path))
    np.savez(tmp_path / "again.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)
    (x2, y2), (xt2, yt2) = load_from(tmp_path / "again.npz")
    assert x.shape == (3, 28, 28, 1) and x2.shape == x.shape
    for got, want in ((x2, x), (y2, y), (xt2, xt), (yt2, yt)):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("split", ["train", "test"])
def test_an_empty_split_is_reported(tmp_path, split):
    arrays = {"x_train": np.zeros((3, 28, 28), np.uint8), "y_train": np.arange(3),
              "x_test": np.zeros((2, 28, 28), np.uint8), "y_test": np.arange(2)}
    arrays[f"x_{split}"], arrays[f"y_{split}"] = arrays[f"x_{split}"][:0], arrays[f"y_{split}"][:0]
    np.savez(tmp_path / "empty.npz", **arrays)
    with pytest.raises(DatasetError, match=rf"empty\.npz \({split}\): no images"):
        load_from(tmp_path / "empty.npz")


@pytest.fixture
def no_system_data(tmp_path, monkeypatch):
    """No environment variables, and empty system directories."""
    monkeypatch.delenv(datasets.FASHION_MNIST_ENV, raising=False)
    monkeypatch.delenv(datasets.MNIST_ENV, raising=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setattr(datasets, "SYSTEM_DIRS", {"fashion-mnist": empty, "mnist": empty})
    return empty


def test_search_order_explicit_path_beats_env_var(tmp_path, monkeypatch, no_system_data):
    explicit = write_idx_dir(tmp_path / "explicit", 3, 2)
    monkeypatch.setenv(datasets.FASHION_MNIST_ENV, str(write_idx_dir(tmp_path / "env", 4, 2)))
    splits = load_fashion_mnist(explicit)
    assert splits.source == str(explicit) and len(splits[0][0]) == 3


def test_search_order_env_var_beats_system_dir(tmp_path, monkeypatch, no_system_data):
    env_dir = write_idx_dir(tmp_path / "env", 4, 2)
    monkeypatch.setattr(datasets, "SYSTEM_DIRS", {"fashion-mnist": write_idx_dir(tmp_path / "sys", 5, 2)})
    monkeypatch.setenv(datasets.FASHION_MNIST_ENV, str(env_dir))
    splits = load_fashion_mnist()
    assert splits.source == str(env_dir) and len(splits[0][0]) == 4


def test_search_order_system_dir_beats_bundled(tmp_path, monkeypatch, no_system_data):
    system_dir = write_idx_dir(tmp_path / "sys", 5, 2)
    monkeypatch.setattr(datasets, "SYSTEM_DIRS", {"fashion-mnist": system_dir})
    splits = load_fashion_mnist()
    assert splits.source == str(system_dir) and len(splits[0][0]) == 5


def test_bundled_sample_is_the_last_resort(no_system_data):
    splits = load_fashion_mnist()
    (x, y), (xt, yt) = splits
    assert "bundled sample" in splits.source
    assert x.shape == (5000, 28, 28, 1) and xt.shape == (1000, 28, 28, 1)
    assert x.dtype == np.uint8 and y.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(y, minlength=10), np.full(10, 500))
    np.testing.assert_array_equal(np.bincount(yt, minlength=10), np.full(10, 100))
    assert 60 < x.mean() < 90  # real clothing images (Fashion-MNIST's mean pixel is ~73)


def test_missing_explicit_path_does_not_fall_back(tmp_path, no_system_data):
    with pytest.raises(DatasetError, match="nowhere: no such file or directory"):
        load_fashion_mnist(tmp_path / "nowhere")


def test_a_fifo_or_a_device_is_refused_without_opening_it(tmp_path):
    """Opening a FIFO would block and /dev/zero never ends: both are named for what they are."""
    fifo = tmp_path / "data.npz"
    os.mkfifo(fifo)
    device = tmp_path / "zero.npz"
    device.symlink_to("/dev/zero")
    for path in (fifo, device):
        with pytest.raises(DatasetError, match=f"{path.name}: not a regular file or a directory"):
            datasets.load_from(path)
        with pytest.raises(DatasetError, match=f"{path.name}: not a regular file, expected an"):
            read_idx(path)


def test_a_path_that_cannot_be_examined_is_left_to_open(tmp_path, monkeypatch):
    """Path.exists raises PermissionError below an unsearchable directory; the check for FIFOs
    must not leak it (open reports the real error, here none)."""
    path = tmp_path / "labels.idx"
    path.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 2, 7, 9]))

    def refuse(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "exists", refuse)
    np.testing.assert_array_equal(read_idx(path), [7, 9])


def test_env_var_pointing_nowhere_is_reported(tmp_path, monkeypatch, no_system_data):
    monkeypatch.setenv(datasets.FASHION_MNIST_ENV, str(tmp_path / "gone"))
    with pytest.raises(DatasetError, match="gone: no such file or directory"):
        load_fashion_mnist()


def test_mnist_has_no_bundled_fallback(no_system_data):
    with pytest.raises(DatasetError, match="mnist not found: pass a path, set CNNEXT_MNIST"):
        load_mnist()


def test_mnist_env_var(tmp_path, monkeypatch, no_system_data):
    monkeypatch.setenv(datasets.MNIST_ENV, str(write_idx_dir(tmp_path / "digits", 6, 3, gz=False)))
    (x, _), (xt, _) = load_mnist()
    assert x.shape == (6, 28, 28, 1) and xt.shape == (3, 28, 28, 1)


def test_class_names():
    assert len(datasets.FASHION_MNIST_CLASSES) == 10 and datasets.FASHION_MNIST_CLASSES[9] == "Ankle boot"
    assert datasets.MNIST_CLASSES[7] == "7"


def test_debian_files_when_installed():
    directory = Path("/usr/share/datasets/fashion-mnist")
    if not (directory / "t10k-labels-idx1-ubyte.gz").exists():
        if os.environ.get("CI") == "true":
            pytest.fail("CI must install dataset-fashion-mnist (apt-get install dataset-fashion-mnist)")
        pytest.skip("dataset-fashion-mnist is not installed")
    (x, y), (xt, yt) = load_from(directory)
    assert x.shape == (60000, 28, 28, 1) and xt.shape == (10000, 28, 28, 1)
    np.testing.assert_array_equal(np.bincount(y), np.full(10, 6000))
    np.testing.assert_array_equal(np.bincount(yt), np.full(10, 1000))
