"""Weight initialisers. Each takes ``(shape, fan_in, fan_out, rng, dtype)`` and returns an array.

References
----------
Glorot & Bengio, "Understanding the difficulty of training deep feedforward neural networks",
AISTATS 2010 (Glorot/Xavier). He et al., "Delving Deep into Rectifiers", ICCV 2015 (He/Kaiming).
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

#: the shape argument of an initialiser
Shape = tuple[int, ...]
#: ``fn(shape, fan_in, fan_out, rng, dtype) -> array``
Initializer = Callable[..., Any]


def zeros(shape: Shape, fan_in: int, fan_out: int, rng: np.random.Generator,
          dtype: DTypeLike) -> np.ndarray:
    """All zeros. For weights this warns: every unit of the layer then gets the same gradient and
    they stay identical forever (the symmetry problem)."""
    return np.zeros(shape, dtype=dtype)


def ones(shape: Shape, fan_in: int, fan_out: int, rng: np.random.Generator,
         dtype: DTypeLike) -> np.ndarray:
    """All ones."""
    return np.ones(shape, dtype=dtype)


def normal(shape: Shape, fan_in: int, fan_out: int, rng: np.random.Generator,
           dtype: DTypeLike, std: float = 0.01) -> np.ndarray:
    """Small random normal, N(0, std^2), std = 0.01 by default."""
    return (rng.standard_normal(shape) * std).astype(dtype)


def glorot_uniform(shape: Shape, fan_in: int, fan_out: int, rng: np.random.Generator,
                   dtype: DTypeLike) -> np.ndarray:
    """U(-l, l), l = sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio 2010, eq. 16)."""
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape).astype(dtype)


def glorot_normal(shape: Shape, fan_in: int, fan_out: int, rng: np.random.Generator,
                  dtype: DTypeLike) -> np.ndarray:
    """N(0, 2 / (fan_in + fan_out))."""
    return (rng.standard_normal(shape) * np.sqrt(2.0 / (fan_in + fan_out))).astype(dtype)


def he_normal(shape: Shape, fan_in: int, fan_out: int, rng: np.random.Generator,
              dtype: DTypeLike) -> np.ndarray:
    """N(0, 2 / fan_in) (He et al. 2015)."""
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(dtype)


def he_uniform(shape: Shape, fan_in: int, fan_out: int, rng: np.random.Generator,
               dtype: DTypeLike) -> np.ndarray:
    """U(-l, l), l = sqrt(6 / fan_in)."""
    limit = np.sqrt(6.0 / fan_in)
    return rng.uniform(-limit, limit, size=shape).astype(dtype)


INITIALIZERS = {
    "zeros": zeros, "ones": ones, "normal": normal, "small_random": normal,
    "glorot_uniform": glorot_uniform, "xavier_uniform": glorot_uniform,
    "glorot_normal": glorot_normal, "xavier_normal": glorot_normal,
    "he_normal": he_normal, "kaiming_normal": he_normal,
    "he_uniform": he_uniform, "kaiming_uniform": he_uniform,
}


def get(name: str | Initializer) -> Initializer:
    """Look up an initialiser by name (or pass a callable through).

    Raises
    ------
    ValueError
        For an unknown name.
    """
    if callable(name):
        return name
    if name not in INITIALIZERS:
        raise ValueError(f"unknown initializer {name!r}; choose one of {sorted(INITIALIZERS)}")
    return INITIALIZERS[name]


def initialize(name: str | Initializer, shape: Shape, fan_in: int, fan_out: int,
               rng: np.random.Generator, dtype: DTypeLike, what: str = "weight") -> np.ndarray:
    """Create an array with the named initialiser; warns for an all-zero weight."""
    fn = get(name)
    if fn is zeros and what == "weight":
        warnings.warn("weight_init='zeros': all units of the layer compute the same output and "
                      "get the same gradient, so they stay identical (the symmetry problem). "
                      "Use a random initializer.", stacklevel=3)
    arr = np.asarray(fn(shape, fan_in, fan_out, rng, dtype), dtype=dtype)
    if arr.shape != tuple(shape):
        raise ValueError(f"initializer {name!r} returned shape {arr.shape}, expected "
                         f"{tuple(shape)}")
    return np.ascontiguousarray(arr)
