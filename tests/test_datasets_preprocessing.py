"""Preprocessing helpers: to_float, normalize, one_hot, train_val_split, batches."""
import numpy as np
import pytest

from cnnext.preprocessing import batches, normalize, one_hot, to_float, train_val_split


def test_to_float_scales_uint8_to_unit_interval():
    x = np.array([[0, 51, 255]], dtype=np.uint8)
    out = to_float(x)
    assert out.dtype == np.float32 and out.shape == x.shape
    np.testing.assert_allclose(out, [[0.0, 0.2, 1.0]], rtol=1e-6)
    assert to_float(x, scale=2.0, dtype=np.float64).dtype == np.float64
    np.testing.assert_array_equal(to_float(x, scale=2.0, dtype=np.float64), [[0, 102, 510]])


def test_to_float_rejects_integer_dtype():
    with pytest.raises(TypeError, match="floating dtype"):
        to_float(np.zeros(3, np.uint8), dtype=np.int32)


def test_normalize_uses_own_statistics_then_given_ones():
    rng = np.random.default_rng(0)
    train = rng.uniform(0, 1, (50, 4, 4, 1)).astype(np.float32)
    test = rng.uniform(0, 1, (20, 4, 4, 1)).astype(np.float32)
    train_n, mean, std = normalize(train)
    assert train_n.dtype == np.float32
    assert abs(train_n.mean()) < 1e-5 and abs(train_n.std() - 1) < 1e-5
    np.testing.assert_allclose(mean, train.mean(dtype=np.float64), rtol=1e-6)
    test_n, mean2, std2 = normalize(test, mean, std)
    assert (mean2, std2) == (mean, std)
    np.testing.assert_allclose(test_n, (test - mean) / std, rtol=1e-5)


def test_normalize_rejects_constant_input_and_ints():
    with pytest.raises(ValueError, match="std > 0"):
        normalize(np.ones((3, 3), np.float32))
    with pytest.raises(TypeError, match="float array"):
        normalize(np.ones((3, 3), np.uint8))


def test_one_hot():
    out = one_hot(np.array([2, 0, 1, 2]), 3)
    np.testing.assert_array_equal(out, [[0, 0, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    assert out.dtype == np.float32
    assert one_hot(np.array([], np.int64), 4).shape == (0, 4)


@pytest.mark.parametrize("labels, classes, message", [
    (np.array([0, 3]), 3, r"0..2, got 0..3"),
    (np.array([-1, 0]), 3, r"0..2, got -1..0"),
    (np.array([[0, 1]]), 3, "1-D integer"),
    (np.array([0.0, 1.0]), 3, "1-D integer"),
    (np.array([0]), 0, "num_classes >= 1"),
])
def test_one_hot_rejects_bad_input(labels, classes, message):
    with pytest.raises(ValueError, match=message):
        one_hot(labels, classes)


def test_train_val_split_partitions_the_data():
    x = np.arange(100).reshape(100, 1) * 10
    y = np.arange(100)
    (xt, yt), (xv, yv) = train_val_split(x, y, val_fraction=0.25, seed=3)
    assert len(xv) == 25 and len(xt) == 75
    np.testing.assert_array_equal(np.sort(np.concatenate([yt, yv])), y)
    np.testing.assert_array_equal(xt[:, 0], yt * 10)  # pairs stay together
    (_, yt2), (_, yv2) = train_val_split(x, y, val_fraction=0.25, seed=3)
    np.testing.assert_array_equal(yv, yv2)  # the seed fixes the split
    assert not np.array_equal(np.sort(yv), np.arange(25))  # shuffled, not the first 25


def test_train_val_split_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"val_fraction must lie in \[0, 1\), got 1.0"):
        train_val_split(np.zeros(4), np.zeros(4), val_fraction=1.0)
    with pytest.raises(ValueError, match="differ in length: 4 vs 3"):
        train_val_split(np.zeros(4), np.zeros(3))
    for fraction in (0.96, 0.01):  # all 10 samples to validation; none
        with pytest.raises(ValueError, match=f"val_fraction={fraction} of 10 samples leaves no"):
            train_val_split(np.zeros(10), np.zeros(10), val_fraction=fraction)
    (xt, _), (xv, _) = train_val_split(np.zeros(10), np.zeros(10), val_fraction=0.0)
    assert (len(xt), len(xv)) == (10, 0)


@pytest.mark.parametrize("shuffle", [False, True])
def test_batches_cover_every_sample_once_and_keep_the_last_partial_batch(shuffle):
    x = np.arange(10)[:, None] * 2
    y = np.arange(10)
    out = list(batches(x, y, batch_size=4, shuffle=shuffle, seed=1))
    assert [len(yb) for _, yb in out] == [4, 4, 2]
    seen = np.concatenate([yb for _, yb in out])
    np.testing.assert_array_equal(np.sort(seen), y)
    for xb, yb in out:
        np.testing.assert_array_equal(xb[:, 0], yb * 2)
    if shuffle:
        assert not np.array_equal(seen, y)
        np.testing.assert_array_equal(seen, np.concatenate([b for _, b in batches(x, y, 4, True, seed=1)]))
    else:
        np.testing.assert_array_equal(seen, y)


def test_batches_validate_arguments_eagerly():
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        batches(np.zeros(3), np.zeros(3), batch_size=0)
    with pytest.raises(ValueError, match="differ in length"):
        batches(np.zeros(3), np.zeros(2), batch_size=2)
