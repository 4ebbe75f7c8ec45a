"""Tests for fastnn.datasets: IDX reader, Fashion-MNIST loader, one_hot, minibatches."""
import gzip
import os
import struct

import numpy as np
import pytest

from fastnn import datasets
from fastnn.datasets import load_fashion_mnist, minibatches, one_hot, read_idx

from conftest import requires_fashion_mnist_package


# -- helpers: IDX files written plainly with struct -------------------------------------------

def idx_bytes(arr, type_code=0x08, big_endian_dtype=">u1"):
    arr = np.asarray(arr)
    header = struct.pack(">BBBB", 0, 0, type_code, arr.ndim)
    header += b"".join(struct.pack(">I", d) for d in arr.shape)
    return header + arr.astype(big_endian_dtype).tobytes()


def write(path, data, compress):
    if compress:
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        with open(path, "wb") as f:
            f.write(data)
    return path


def write_fashion(folder, n_train=6, n_test=4, n_train_labels=None, compress=True, seed=0):
    """Four small Fashion-MNIST-shaped files; returns the arrays written."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        images[0, 0, 0], images[0, 0, 1] = 0, 255
        n_lab = n_train_labels if (split == "train" and n_train_labels is not None) else n
        labels = rng.integers(0, 10, size=n_lab, dtype=np.uint8)
        suffix = ".gz" if compress else ""
        write(os.path.join(folder, f"{split}-images-idx3-ubyte{suffix}"), idx_bytes(images),
              compress)
        write(os.path.join(folder, f"{split}-labels-idx1-ubyte{suffix}"), idx_bytes(labels),
              compress)
        arrays[split] = (images, labels)
    return arrays


# -- read_idx ---------------------------------------------------------------------------------

@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_images_and_labels(tmp_path, compress):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    p_img = write(tmp_path / "img.idx", idx_bytes(images), compress)
    p_lab = write(tmp_path / "lab.idx", idx_bytes(labels), compress)

    got = read_idx(p_img)
    assert got.dtype == np.uint8 and got.shape == (2, 3, 4)
    np.testing.assert_array_equal(got, images)
    assert got.flags.writeable and got.flags.c_contiguous
    got_lab = read_idx(str(p_lab))
    assert got_lab.shape == (5,)
    np.testing.assert_array_equal(got_lab, labels)


def test_read_idx_gzip_detected_from_content_not_name(tmp_path):
    labels = np.array([7, 8, 9], dtype=np.uint8)
    p = write(tmp_path / "labels.raw", idx_bytes(labels), compress=True)  # no .gz suffix
    np.testing.assert_array_equal(read_idx(p), labels)


@pytest.mark.parametrize("type_code,be,dtype", [
    (0x09, ">i1", np.int8), (0x0B, ">i2", np.int16), (0x0C, ">i4", np.int32),
    (0x0D, ">f4", np.float32), (0x0E, ">f8", np.float64),
])
def test_read_idx_other_types_big_endian(tmp_path, type_code, be, dtype):
    arr = np.array([[-2, 1, 300], [5, -7, 0]]) if type_code != 0x09 else np.array([[-2, 1, 3]])
    p = write(tmp_path / "a.idx", idx_bytes(arr, type_code, be), compress=False)
    got = read_idx(p)
    assert got.dtype == np.dtype(dtype) and got.dtype.isnative
    np.testing.assert_array_equal(got, arr.astype(dtype))


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_truncated(tmp_path, compress):
    data = idx_bytes(np.zeros((3, 4, 4), dtype=np.uint8))
    p = write(tmp_path / "trunc.idx", data[:-1], compress)
    with pytest.raises(ValueError, match="truncated") as info:
        read_idx(p)
    assert "trunc.idx" in str(info.value)


def test_read_idx_truncated_header(tmp_path):
    data = idx_bytes(np.zeros((3, 4, 4), dtype=np.uint8))
    p = write(tmp_path / "hdr.idx", data[:10], compress=False)
    with pytest.raises(ValueError, match="header") as info:
        read_idx(p)
    assert "hdr.idx" in str(info.value)


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_extra_bytes(tmp_path, compress):
    data = idx_bytes(np.zeros(5, dtype=np.uint8))
    p = write(tmp_path / "extra.idx", data + b"\x00", compress)
    with pytest.raises(ValueError, match="extra bytes") as info:
        read_idx(p)
    assert "extra.idx" in str(info.value)


@pytest.mark.parametrize("magic", [b"\x00\x00\x07\x01", b"\x01\x00\x08\x01", b"\x00\x00\x08\x00",
                                   b"PK\x03\x04", b"\x00\x00"])
def test_read_idx_wrong_magic(tmp_path, magic):
    data = idx_bytes(np.zeros(5, dtype=np.uint8))
    p = write(tmp_path / "magic.idx", magic + data[4:] if len(magic) == 4 else magic,
              compress=False)
    with pytest.raises(ValueError, match="IDX") as info:
        read_idx(p)
    assert "magic.idx" in str(info.value)


def test_read_idx_corrupt_gzip(tmp_path):
    good = gzip.compress(idx_bytes(np.zeros(100, dtype=np.uint8)))
    p = tmp_path / "bad.gz"
    p.write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match="gzip") as info:
        read_idx(p)
    assert "bad.gz" in str(info.value)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nope.idx")


# -- load_fashion_mnist on small synthetic files -----------------------------------------------

@pytest.mark.parametrize("compress", [True, False])
def test_load_fashion_mnist_from_path(tmp_path, compress):
    arrays = write_fashion(tmp_path, compress=compress)
    (X, y), (Xt, yt) = load_fashion_mnist(path=tmp_path)
    assert X.shape == (6, 784) and X.dtype == np.float32
    assert Xt.shape == (4, 784)
    assert y.dtype == np.int64 and yt.dtype == np.int64
    np.testing.assert_array_equal(X, arrays["train"][0].reshape(6, 784) / np.float32(255))
    np.testing.assert_array_equal(y, arrays["train"][1])
    np.testing.assert_array_equal(yt, arrays["t10k"][1])
    assert X.min() == 0.0 and X.max() == 1.0


def test_load_fashion_mnist_unflattened_float64(tmp_path):
    arrays = write_fashion(tmp_path)
    (X, y), (Xt, yt) = load_fashion_mnist(flatten=False, path=tmp_path, dtype=np.float64)
    assert X.shape == (6, 28, 28, 1) and Xt.shape == (4, 28, 28, 1)
    assert X.dtype == np.float64 and X.flags.c_contiguous and X.flags.writeable
    np.testing.assert_array_equal(X[..., 0], arrays["train"][0] / 255.0)


def test_load_fashion_mnist_returns_fresh_arrays(tmp_path):
    write_fashion(tmp_path)
    (X, y), _ = load_fashion_mnist(path=tmp_path)
    X[:] = -1
    y[:] = -1
    (X2, y2), _ = load_fashion_mnist(path=tmp_path)
    assert X2.min() >= 0 and y2.min() >= 0


def test_load_fashion_mnist_env_var(tmp_path, monkeypatch):
    write_fashion(tmp_path, n_train=3, n_test=2)
    monkeypatch.setenv("FASTNN_DATA", str(tmp_path))
    (X, _), (Xt, _) = load_fashion_mnist()
    assert X.shape == (3, 784) and Xt.shape == (2, 784)


def test_load_fashion_mnist_sees_replaced_files(tmp_path):
    write_fashion(tmp_path, n_train=3)
    assert load_fashion_mnist(path=tmp_path)[0][0].shape[0] == 3
    write_fashion(tmp_path, n_train=5)
    assert load_fashion_mnist(path=tmp_path)[0][0].shape[0] == 5


def test_load_fashion_mnist_count_mismatch(tmp_path):
    write_fashion(tmp_path, n_train=6, n_train_labels=5)
    with pytest.raises(ValueError, match="6 images .* 5 labels"):
        load_fashion_mnist(path=tmp_path)


def test_load_fashion_mnist_wrong_image_shape(tmp_path):
    write_fashion(tmp_path)
    write(tmp_path / "train-images-idx3-ubyte.gz", idx_bytes(np.zeros((6, 27, 28), np.uint8)),
          compress=True)
    with pytest.raises(ValueError, match=r"\(N, 28, 28\)"):
        load_fashion_mnist(path=tmp_path)


def test_load_fashion_mnist_labels_out_of_range(tmp_path):
    write_fashion(tmp_path)
    write(tmp_path / "t10k-labels-idx1-ubyte.gz", idx_bytes(np.array([0, 1, 10, 2], np.uint8)),
          compress=True)
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        load_fashion_mnist(path=tmp_path)


def test_load_fashion_mnist_truncated_file_named(tmp_path):
    write_fashion(tmp_path)
    data = idx_bytes(np.zeros((4, 28, 28), np.uint8))[:-100]
    write(tmp_path / "t10k-images-idx3-ubyte.gz", data, compress=True)
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.gz.*truncated"):
        load_fashion_mnist(path=tmp_path)


def test_load_fashion_mnist_missing_file_hint(tmp_path):
    write_fashion(tmp_path)
    os.remove(tmp_path / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(FileNotFoundError) as info:
        load_fashion_mnist(path=tmp_path)
    msg = str(info.value)
    assert "t10k-labels-idx1-ubyte.gz" in msg
    assert "sudo apt-get install dataset-fashion-mnist" in msg
    assert "FASTNN_DATA" in msg


def test_load_fashion_mnist_missing_folder_via_env(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTNN_DATA", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        load_fashion_mnist()


def test_load_fashion_mnist_bad_dtype(tmp_path):
    write_fashion(tmp_path)
    with pytest.raises(TypeError, match="dtype"):
        load_fashion_mnist(path=tmp_path, dtype=np.int32)


# -- the real data set (Debian package dataset-fashion-mnist; CI installs it) -----------------

@pytest.mark.slow
@requires_fashion_mnist_package
def test_real_fashion_mnist(monkeypatch):
    monkeypatch.delenv("FASTNN_DATA", raising=False)
    (X, y), (Xt, yt) = load_fashion_mnist()
    assert X.shape == (60000, 784) and Xt.shape == (10000, 784)
    assert y.shape == (60000,) and yt.shape == (10000,)
    assert X.dtype == np.float32 and Xt.dtype == np.float32
    assert y.dtype == np.int64 and yt.dtype == np.int64
    assert X.min() == 0.0 and X.max() == 1.0 and Xt.min() == 0.0 and Xt.max() == 1.0
    np.testing.assert_array_equal(np.unique(y), np.arange(10))
    np.testing.assert_array_equal(np.bincount(y), np.full(10, 6000))
    np.testing.assert_array_equal(np.bincount(yt), np.full(10, 1000))
    (X4, _), _ = load_fashion_mnist(flatten=False)
    assert X4.shape == (60000, 28, 28, 1)
    np.testing.assert_array_equal(X4.reshape(60000, 784), X)


# -- one_hot ----------------------------------------------------------------------------------

def test_one_hot_values():
    out = one_hot(np.array([2, 0, 1, 2]), 3)
    expected = np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, expected)
    assert one_hot([1], 2, dtype=np.float64).dtype == np.float64
    assert one_hot(np.array([0, 1], dtype=np.uint8), 2).shape == (2, 2)


def test_one_hot_empty():
    assert one_hot([], 4).shape == (0, 4)


@pytest.mark.parametrize("labels", [[0, 3], [-1, 0], [5]])
def test_one_hot_out_of_range(labels):
    with pytest.raises(ValueError, match="labels"):
        one_hot(labels, 3)


@pytest.mark.parametrize("labels", [[0.5, 1.0], [True, False], ["a"]])
def test_one_hot_not_int(labels):
    with pytest.raises(TypeError, match="labels"):
        one_hot(labels, 3)


def test_one_hot_bad_shape_and_classes():
    with pytest.raises(ValueError, match="labels"):
        one_hot([[0, 1]], 3)
    with pytest.raises(ValueError, match="num_classes"):
        one_hot([0], 0)
    with pytest.raises(TypeError, match="num_classes"):
        one_hot([0], 2.0)


# -- minibatches ------------------------------------------------------------------------------

@pytest.mark.parametrize("n,bs", [(10, 3), (10, 5), (10, 10), (10, 64), (1, 1), (97, 8)])
@pytest.mark.parametrize("shuffle", [True, False])
def test_minibatches_cover_each_index_once(n, bs, shuffle):
    batches = list(minibatches(n, bs, shuffle=shuffle, seed=1))
    assert len(batches) == -(-n // bs)
    assert all(len(b) == bs for b in batches[:-1])
    assert 1 <= len(batches[-1]) <= bs
    assert all(b.dtype == np.int64 for b in batches)
    allidx = np.concatenate(batches)
    np.testing.assert_array_equal(np.sort(allidx), np.arange(n))
    if not shuffle:
        np.testing.assert_array_equal(allidx, np.arange(n))


def test_minibatches_seeded_reproducible():
    a = np.concatenate(list(minibatches(100, 7, seed=42)))
    b = np.concatenate(list(minibatches(100, 7, seed=42)))
    c = np.concatenate(list(minibatches(100, 7, seed=43)))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a, np.arange(100))


def test_minibatches_generator_seed_advances():
    rng = np.random.default_rng(0)
    e1 = np.concatenate(list(minibatches(50, 8, seed=rng)))
    e2 = np.concatenate(list(minibatches(50, 8, seed=rng)))
    assert not np.array_equal(e1, e2)  # one Generator: a new order each epoch
    np.testing.assert_array_equal(np.sort(e2), np.arange(50))


def test_minibatches_empty():
    assert list(minibatches(0, 4)) == []


@pytest.mark.parametrize("bs,exc", [(0, ValueError), (-1, ValueError), (2.0, TypeError),
                                    (True, TypeError), ("4", TypeError), (None, TypeError)])
def test_minibatches_bad_batch_size_raises_at_call(bs, exc):
    with pytest.raises(exc, match="batch_size"):
        minibatches(10, bs)  # raised eagerly, before iteration


def test_minibatches_bad_n_samples():
    with pytest.raises(ValueError, match="n_samples"):
        minibatches(-1, 4)
    with pytest.raises(TypeError, match="n_samples"):
        minibatches(10.0, 4)


def test_minibatches_numpy_int_accepted():
    batches = list(minibatches(np.int64(5), np.int32(2), shuffle=False))
    assert [len(b) for b in batches] == [2, 2, 1]


def test_module_exports():
    assert set(datasets.__all__) >= {"read_idx", "load_fashion_mnist", "one_hot", "minibatches"}
