"""Every check of user input, in one place.

Kernels run with bounds checks off and the GIL released, so nothing reaches them unchecked: the
functions here raise ``TypeError``/``ValueError`` naming the argument, what was expected and what
was given, and return arrays that are C-contiguous, aligned, writeable where needed and of the
model's float dtype.
"""
from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def check_dtype(dtype: DTypeLike, name: str = "dtype") -> np.dtype:
    """Return ``np.float32`` or ``np.float64`` as a NumPy dtype; anything else is a TypeError."""
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"{name} must be float32 or float64, got {dtype!r}") from exc
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got {dt}")
    return dt


def check_int(value: Any, name: str, minimum: int | None = None,
              maximum: int | None = None) -> int:
    """An integral number (not bool) within [minimum, maximum]; returns a Python int."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def check_float(value: Any, name: str, minimum: float | None = None, maximum: float | None = None,
                min_inclusive: bool = True, max_inclusive: bool = True) -> float:
    """A finite real number within the given bounds; returns a Python float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if minimum is not None and (value < minimum or (not min_inclusive and value == minimum)):
        op = ">=" if min_inclusive else ">"
        raise ValueError(f"{name} must be {op} {minimum}, got {value}")
    if maximum is not None and (value > maximum or (not max_inclusive and value == maximum)):
        op = "<=" if max_inclusive else "<"
        raise ValueError(f"{name} must be {op} {maximum}, got {value}")
    return value


def _check_kind(a: np.ndarray, name: str) -> None:
    if a.dtype.kind in "fiu" and a.dtype != np.float16:
        return
    if a.dtype == np.float16:
        raise TypeError(f"{name} has dtype float16, which fastnn does not compute in; "
                        f"convert it to float32 first")
    raise TypeError(f"{name} must be a numeric array (float or int), got dtype {a.dtype}")


def _ragged_detail(X: Any, depth: int = 0) -> str:
    """Where nested sequences first differ in length, e.g. "rows of lengths [2, 4]"."""
    try:
        items = list(X)
        lengths = sorted({len(x) for x in items})
    except TypeError:
        return "it mixes sequences and numbers"
    if len(lengths) > 1:
        what = "rows" if depth == 0 else f"entries at depth {depth + 1}"
        return f"{what} of lengths {lengths}"
    for x in items:
        detail = _ragged_detail(x, depth + 1)
        if detail:
            return detail
    return ""


def as_float_array(X: ArrayLike, name: str, dtype: DTypeLike,
                   ndim: int | Sequence[int] | None = None,
                   trailing_shape: Sequence[int | None] | None = None, allow_empty: bool = False,
                   check_finite: bool = True) -> np.ndarray:
    """Convert X to a C-contiguous array of ``dtype`` after checking it.

    Parameters
    ----------
    X : array_like
        Float or int data; ints are converted to ``dtype`` (documented behaviour), bool, complex,
        float16, object and string arrays are refused.
    name : str
        The argument's name, used in error messages.
    dtype : numpy dtype
        float32 or float64: the model's dtype. float64 input to a float32 model is converted once.
    ndim : int or tuple of int, optional
        Allowed numbers of dimensions.
    trailing_shape : tuple, optional
        Required shape of the dimensions after the first (the batch); ``None`` entries match any.
    allow_empty : bool
        Whether 0 rows are allowed.
    check_finite : bool
        Refuse NaN and inf.

    Raises
    ------
    TypeError
        Wrong kind of dtype.
    ValueError
        Wrong number of dimensions, wrong trailing shape, empty, NaN or inf.
    """
    if isinstance(X, np.ndarray):
        a = X
    else:
        try:
            a = np.asarray(X)
        except ValueError:  # nested sequences of different lengths
            raise ValueError(f"{name} is ragged: {_ragged_detail(X)}; every sample must have the "
                             f"same shape") from None
        except Exception as exc:
            raise TypeError(f"{name} could not be converted to an array "
                            f"({type(exc).__name__}: {exc})") from None
    _check_kind(a, name)
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if a.ndim not in allowed:
            want = " or ".join(str(d) for d in allowed)
            raise ValueError(f"{name} must have {want} dimensions, got {a.ndim} (shape {a.shape})")
    if trailing_shape is not None:
        trailing = tuple(trailing_shape)
        got = a.shape[1:]
        if len(got) != len(trailing) \
                or any(t is not None and t != g for t, g in zip(trailing, got)):
            want = "(N, " + ", ".join("*" if t is None else str(t) for t in trailing) + ")"
            raise ValueError(f"{name} must have shape {want}, got {a.shape}")
    if not allow_empty and a.ndim >= 1 and a.shape[0] == 0:
        raise ValueError(f"{name} is empty (0 samples, shape {a.shape})")
    a = np.ascontiguousarray(a, dtype=dtype)
    if not a.flags.aligned:  # pragma: no cover - only from exotic buffers
        a = a.copy()
    if check_finite and a.size and not all_finite(a):
        raise ValueError(f"{name} contains NaN or inf (pass check_finite=False to allow it)")
    return a


def all_finite(a: np.ndarray) -> bool:
    """Whether a C-contiguous float array holds no NaN and no infinity, in one read of it: the
    dot product ``a . a`` (BLAS) is NaN or infinite if any value is (squares are never negative,
    so no inf - inf); only when it is, which also happens when finite values overflow the sum of
    squares, ``np.isfinite`` decides (scikit-learn's ``_assert_all_finite`` first sums the same
    way)."""
    flat = a.reshape(-1)
    if flat.dtype in (np.float32, np.float64):
        with np.errstate(over="ignore", invalid="ignore"):
            if np.isfinite(np.dot(flat, flat)):
                return True
    return bool(np.isfinite(a).all())


def check_labels(y: ArrayLike, name: str, n_samples: int, num_classes: int) -> np.ndarray:
    """Integer class labels of shape (N,) in [0, num_classes), as a C-contiguous int64 array.

    Also accepts a one-hot matrix (N, num_classes) (each row exactly one 1) and float labels with
    no fractional part.
    """
    if isinstance(y, np.ndarray):
        a = y
    else:
        try:
            a = np.asarray(y)
        except Exception as exc:
            raise TypeError(f"{name} could not be converted to an array: {exc}") from exc
    if a.dtype == bool or a.dtype.kind not in "fiu":
        raise TypeError(f"{name} must hold integer class labels, got dtype {a.dtype}")
    if a.ndim == 2 and a.shape[1] == num_classes and num_classes > 1:
        if not (np.isin(a, (0, 1)).all() and (a.sum(axis=1) == 1).all()):
            raise ValueError(f"{name} of shape {a.shape} is 2-D but not one-hot "
                             f"(each row must hold exactly one 1)")
        a = a.argmax(axis=1)
    elif a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1:
        raise ValueError(f"{name} must have shape ({n_samples},) (labels) or ({n_samples}, "
                         f"{num_classes}) (one-hot), got {a.shape}")
    if a.shape[0] != n_samples:
        raise ValueError(f"{name} has {a.shape[0]} labels but X has {n_samples} samples")
    if a.dtype.kind == "f":
        if not np.isfinite(a).all():
            raise ValueError(f"{name} contains NaN or inf")
        if (a != np.round(a)).any():
            raise ValueError(f"{name} holds float labels with a fractional part")
    a = np.ascontiguousarray(a, dtype=np.int64)
    if a.size:
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(f"{name} must be in [0, {num_classes}), got values in [{lo}, {hi}]")
    return a
