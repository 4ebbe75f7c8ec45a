"""Data helpers: the IDX file reader, Fashion-MNIST, one-hot encoding and minibatch indices.

Fashion-MNIST is read from local files only (nothing is downloaded): pass ``path``, or set the
environment variable ``FASTNN_DATA``, or install Debian's ``dataset-fashion-mnist`` package, which
puts the four files in ``/usr/share/datasets/fashion-mnist/``.
"""
from __future__ import annotations

import functools
import gzip
import os
import zlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from . import _validation as V

if TYPE_CHECKING:
    from .model import Sequential

#: a file or folder name
PathLike = str | os.PathLike[str]

__all__ = ["read_idx", "load_fashion_mnist", "one_hot", "minibatches", "DEFAULT_DATA_DIR"]

#: Where Debian's ``dataset-fashion-mnist`` package installs the files.
DEFAULT_DATA_DIR = "/usr/share/datasets/fashion-mnist"

_INSTALL_HINT = ("install it with `sudo apt-get install dataset-fashion-mnist` (files in "
                 f"{DEFAULT_DATA_DIR}), or set FASTNN_DATA to the folder holding the files")

# IDX type byte -> big-endian element dtype (the format's full table; MNIST-style files use 0x08)
_IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_FASHION_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
_FASHION_CLASSES = 10


def _read_bytes(path: str) -> bytes:
    """The file's content, gunzipped if it starts with the gzip magic bytes."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as exc:  # truncated or corrupt gzip stream
        raise ValueError(f"{path}: corrupt or truncated gzip data ({exc})") from exc


def _parse_idx(data: bytes, path: str) -> np.ndarray:
    """Parse IDX bytes into a read-only array (native byte order for multi-byte types)."""
    if len(data) < 4:
        raise ValueError(f"{path}: not an IDX file (only {len(data)} bytes, the magic number "
                         f"alone takes 4)")
    zero0, zero1, type_code, ndim = data[0], data[1], data[2], data[3]
    if zero0 != 0 or zero1 != 0 or type_code not in _IDX_TYPES or ndim == 0:
        raise ValueError(f"{path}: not an IDX file (magic number 0x{data[:4].hex()}; expected "
                         f"0x0000 + a type byte in "
                         f"{{{', '.join(f'0x{t:02x}' for t in _IDX_TYPES)}}} + ndim >= 1, e.g. "
                         f"0x00000803 for uint8 images, 0x00000801 for uint8 labels)")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(data)} bytes, the header of a "
                         f"{ndim}-d array takes {header})")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_TYPES[type_code]
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    expected = header + count * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has extra bytes after the data"
        raise ValueError(f"{path}: IDX file {what}: dims {shape} of {dtype.name} need "
                         f"{expected} bytes (header {header} + data {count * dtype.itemsize}), "
                         f"the file has {len(data)}")
    arr = np.frombuffer(data, dtype=dtype, count=count, offset=header).reshape(shape)
    if not dtype.isnative:
        arr = arr.astype(dtype.newbyteorder("="))
        arr.flags.writeable = False
    return arr


def read_idx(path: PathLike) -> np.ndarray:
    """Read an IDX file (the MNIST / Fashion-MNIST format), gzip-compressed or raw.

    The file starts with a big-endian magic number ``0x0000TTDD``: ``TT`` the element type
    (``0x08`` uint8, ``0x09`` int8, ``0x0B`` int16, ``0x0C`` int32, ``0x0D`` float32,
    ``0x0E`` float64) and ``DD`` the number of dimensions; then ``DD`` big-endian uint32 sizes,
    then the data, big-endian, row-major. Images are ``0x00000803`` (N, rows, cols), labels
    ``0x00000801`` (N,). Compression is detected from the content (gzip magic bytes), not from
    the file name.

    Parameters
    ----------
    path : str or os.PathLike
        The file to read.

    Returns
    -------
    ndarray
        A new writeable C-contiguous array of the file's shape, in the file's element type
        (native byte order), e.g. uint8 of shape ``(N, 28, 28)`` for images.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the magic number is wrong, the header is incomplete, the gzip stream is corrupt, or the
        data is not exactly as long as the product of the dimensions (a truncated file, or extra
        bytes after the data). The message names the file.
    """
    path = os.fspath(path)
    return _parse_idx(_read_bytes(path), path).copy()


@functools.lru_cache(maxsize=4)
def _read_idx_cached(path: str, mtime_ns: int, size: int) -> np.ndarray:
    # keyed on (path, mtime, size) so that a replaced file is read again; the arrays are read-only
    arr = _parse_idx(_read_bytes(path), path)
    arr.flags.writeable = False
    return arr


def _read_idx_readonly(path: str) -> np.ndarray:
    st = os.stat(path)
    return _read_idx_cached(os.path.abspath(path), st.st_mtime_ns, st.st_size)


def _data_dir(path: PathLike | None) -> tuple[str, str]:
    if path is not None:
        return os.fspath(path), "the path argument"
    env = os.environ.get("FASTNN_DATA")
    if env:
        return env, "FASTNN_DATA"
    return DEFAULT_DATA_DIR, "the default folder"


def _find_file(folder: str, name: str, source: str) -> str:
    for candidate in (name, name[:-3]):  # the .gz file, else an uncompressed copy
        full = os.path.join(folder, candidate)
        if os.path.isfile(full):
            return full
    raise FileNotFoundError(
        f"Fashion-MNIST file {name!r} not found in {folder!r} ({source}); {_INSTALL_HINT}")


def load_fashion_mnist(flatten: bool = True, path: PathLike | None = None,
                       dtype: DTypeLike = np.float32) -> tuple[tuple[np.ndarray, np.ndarray],
                                                              tuple[np.ndarray, np.ndarray]]:
    """Load Fashion-MNIST: 60,000 training and 10,000 test images of clothes, 10 classes.

    Reads ``{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz`` (or the same names without
    ``.gz``) from the first of: ``path``; the folder in the environment variable
    ``FASTNN_DATA``; ``/usr/share/datasets/fashion-mnist/`` (Debian's package
    ``dataset-fashion-mnist``). Nothing is downloaded. The parsed files are kept in a small
    cache (keyed on path, modification time and size); the returned arrays are always new.

    Classes: 0 T-shirt/top, 1 Trouser, 2 Pullover, 3 Dress, 4 Coat, 5 Sandal, 6 Shirt,
    7 Sneaker, 8 Bag, 9 Ankle boot.

    Parameters
    ----------
    flatten : bool, default=True
        Return images as rows of 784 pixels (for dense layers) instead of ``(28, 28, 1)``
        channels-last images (for convolutions).
    path : str or os.PathLike, optional
        Folder holding the four files. Overrides ``FASTNN_DATA``.
    dtype : {np.float32, np.float64}, default=np.float32
        Dtype of the images.

    Returns
    -------
    (X_train, y_train), (X_test, y_test) : tuple of tuples of ndarray
        Pixels scaled to ``[0, 1]`` (``uint8 / 255``) in ``dtype``; labels int64 in ``[0, 10)``.

    Shape
    -----
    - X_train: ``(60000, 784)`` if ``flatten`` else ``(60000, 28, 28, 1)``.
    - y_train: ``(60000,)``.
    - X_test: ``(10000, 784)`` if ``flatten`` else ``(10000, 28, 28, 1)``.
    - y_test: ``(10000,)``.

    Raises
    ------
    FileNotFoundError
        If a file is missing; the message says to run
        ``sudo apt-get install dataset-fashion-mnist`` or to set ``FASTNN_DATA``.
    ValueError
        If a file is not a valid IDX file of the expected kind (uint8 images ``(N, 28, 28)``,
        uint8 labels ``(N,)`` in ``[0, 10)``), or if the image and label counts differ.
    TypeError
        If ``dtype`` is not float32 or float64.

    References
    ----------
    H. Xiao, K. Rasul, R. Vollgraf, "Fashion-MNIST: a Novel Image Dataset for Benchmarking
    Machine Learning Algorithms", arXiv:1708.07747, 2017. MIT licence.
    """
    dtype = V.check_dtype(dtype)
    folder, source = _data_dir(path)
    files = {key: _find_file(folder, name, source) for key, name in _FASHION_FILES.items()}

    out = []
    for split in ("train", "test"):
        img_path, lab_path = files[f"{split}_images"], files[f"{split}_labels"]
        images = _read_idx_readonly(img_path)
        labels = _read_idx_readonly(lab_path)
        if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
            raise ValueError(f"{img_path}: expected uint8 images of shape (N, 28, 28), got "
                             f"{images.dtype} {images.shape}")
        if labels.dtype != np.uint8 or labels.ndim != 1:
            raise ValueError(f"{lab_path}: expected uint8 labels of shape (N,), got "
                             f"{labels.dtype} {labels.shape}")
        if images.shape[0] != labels.shape[0]:
            raise ValueError(f"Fashion-MNIST {split} split: {img_path} holds {images.shape[0]} "
                             f"images but {lab_path} holds {labels.shape[0]} labels")
        if labels.size and int(labels.max()) >= _FASHION_CLASSES:
            raise ValueError(f"{lab_path}: labels must be in [0, {_FASHION_CLASSES}), found "
                             f"{int(labels.max())}")
        n = images.shape[0]
        X = images.reshape(n, 784) if flatten else images.reshape(n, 28, 28, 1)
        X = X.astype(dtype)  # a new, writeable, C-contiguous array
        np.divide(X, 255, out=X)  # correctly rounded: 255 -> exactly 1.0
        out.append((X, labels.astype(np.int64)))
    return out[0], out[1]


def one_hot(labels: ArrayLike, num_classes: int, dtype: DTypeLike = np.float32) -> np.ndarray:
    """One-hot encode integer class labels.

    Parameters
    ----------
    labels : array_like of int
        Class indices in ``[0, num_classes)``.
    num_classes : int
        Number of classes ``K >= 1``.
    dtype : {np.float32, np.float64}, default=np.float32
        Dtype of the result.

    Returns
    -------
    ndarray
        ``out[i, labels[i]] == 1``, all other entries 0.

    Shape
    -----
    - labels: ``(N,)``.
    - Output: ``(N, num_classes)``, ``dtype``.

    Raises
    ------
    TypeError
        If ``labels`` is not an integer array (bool and float are refused), or ``num_classes``
        is not an int, or ``dtype`` is not float32/float64.
    ValueError
        If ``labels`` is not 1-D, or a label is outside ``[0, num_classes)``, or
        ``num_classes < 1``.
    """
    num_classes = V.check_int(num_classes, "num_classes", minimum=1)
    dtype = V.check_dtype(dtype)
    try:
        a = np.asarray(labels)
    except Exception as exc:
        raise TypeError(f"labels could not be converted to an array: {exc}") from exc
    if a.dtype == bool or a.dtype.kind not in "iu":
        if a.size == 0 and a.dtype.kind == "f":  # np.asarray([]) is float64
            a = a.astype(np.int64)
        else:
            raise TypeError(f"labels must be integers, got dtype {a.dtype}")
    if a.ndim != 1:
        raise ValueError(f"labels must be 1-D (N,), got shape {a.shape}")
    if a.size:
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(f"labels must be in [0, {num_classes}), got values in [{lo}, {hi}]")
    out = np.zeros((a.shape[0], num_classes), dtype=dtype)
    out[np.arange(a.shape[0]), a] = 1
    return out


def minibatches(n_samples: int, batch_size: int, shuffle: bool = True,
                seed: int | np.random.Generator | None = None) -> Iterator[np.ndarray]:
    """Iterate over minibatches of sample indices covering ``range(n_samples)`` once.

    Arguments are checked when the function is called, not at the first ``next()``.

    Parameters
    ----------
    n_samples : int
        Number of samples, ``>= 0`` (0 yields nothing).
    batch_size : int
        Samples per batch, ``>= 1``. The last batch holds the remainder and may be smaller.
    shuffle : bool, default=True
        Visit the samples in a random order; otherwise in order ``0, 1, ..., n_samples - 1``.
    seed : int, numpy.random.Generator or None, default=None
        Passed to ``numpy.random.default_rng``: the same int gives the same batches; ``None``
        draws fresh entropy; a Generator is used (and advanced) as is.

    Yields
    ------
    ndarray of int64
        Indices of one batch, shape ``(min(batch_size, remaining),)``. Every index in
        ``range(n_samples)`` appears in exactly one batch.

    Raises
    ------
    TypeError
        If ``n_samples`` or ``batch_size`` is not an int (bool and float are refused).
    ValueError
        If ``n_samples < 0`` or ``batch_size < 1``.

    Examples
    --------
    >>> for idx in minibatches(len(X), 64, seed=0):  # doctest: +SKIP
    ...     model.train_on_batch(X[idx], y[idx])
    """
    n_samples = V.check_int(n_samples, "n_samples", minimum=0)
    batch_size = V.check_int(batch_size, "batch_size", minimum=1)
    if shuffle:
        order = np.random.default_rng(seed).permutation(n_samples).astype(np.int64, copy=False)
    else:
        order = np.arange(n_samples, dtype=np.int64)
    return _batches(order, batch_size)


def _batches(order: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    for start in range(0, order.shape[0], batch_size):
        yield order[start:start + batch_size]


def random_batch(model: Sequential, batch_size: int,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A random batch that fits a compiled ``model``: inputs and targets for its loss (for
    profiling and smoke tests; no dataset needed).

    Parameters
    ----------
    model : Sequential
        Compiled, with ``input_shape`` set and a 2-D output ``(N, K)``.
    batch_size : int
        ``>= 1``.
    seed : int, default=0
        Seed of ``numpy.random.default_rng``.

    Returns
    -------
    X : ndarray, shape ``(batch_size, *model.input_shape)``, the model's dtype
        Uniform in ``[0, 1)``.
    y : ndarray
        Softmax cross-entropy: int64 labels ``(batch_size,)`` in ``[0, K)``; binary
        cross-entropy: ``(batch_size, K)`` uniform in ``[0, 1)``; KL divergence: ``(batch_size,
        K)`` probability rows (Dirichlet(1)); other losses (mean squared error, Huber):
        ``(batch_size, K)`` standard normal; floats in the model's dtype.

    Raises
    ------
    ValueError
        If the model has no input shape or its output is not ``(N, K)``.
    """
    from .losses import BinaryCrossEntropy, KLDivergence, SoftmaxCrossEntropy

    batch_size = V.check_int(batch_size, "batch_size", minimum=1)
    if model.input_shape is None:
        raise ValueError("the model has no input shape (its first layer is not Dense and it was "
                         "saved without input_shape), so no batch can be made for it")
    try:
        out_shape = tuple(model.output_shape(model.input_shape))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"the model's layers do not fit its input shape "
                         f"{tuple(model.input_shape)}: {exc}") from None
    if len(out_shape) != 1:
        raise ValueError(f"the model's output has shape {out_shape} per sample; the losses need "
                         f"one vector (K,) per sample")
    k = out_shape[0]
    dtype = np.dtype(model.dtype)
    rng = np.random.default_rng(seed)
    X = rng.random((batch_size,) + tuple(model.input_shape)).astype(dtype)
    if isinstance(model.loss, SoftmaxCrossEntropy):
        y = rng.integers(0, k, size=batch_size, dtype=np.int64)
    elif isinstance(model.loss, BinaryCrossEntropy):
        y = rng.random((batch_size, k)).astype(dtype)
    elif isinstance(model.loss, KLDivergence):
        y = rng.dirichlet(np.ones(k), size=batch_size).astype(dtype)
    else:
        y = rng.standard_normal((batch_size, k)).astype(dtype)
    return X, y
