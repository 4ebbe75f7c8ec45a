"""Model files: a versioned ``.npz`` that never unpickles.

Layout: one array per parameter, named ``"<layer index>.<name>"`` (optimizer state under
``"opt/<key>/<slot>"``), and ``"__header__"``: a JSON document (a 0-d unicode array) with the
format name and version, the fastnn version, the model class, dtype and input shape, every
layer's class and config, the loss's and the optimizer's class and config, and, for every array,
its shape, dtype and SHA-256. Classes are looked up by name in the registries
(``fastnn._registry.MODELS``, ``fastnn.layers.LAYERS``, ``fastnn.losses.LOSSES``,
``fastnn.optimizers.OPTIMIZERS``), so a user's own subclass loads once its module is imported;
this module never imports the model module. ``load`` opens
the file with ``allow_pickle=False``, checks each array against the header before using it and
refuses arrays the header does not list. Saving writes a temporary file in the same folder and
renames it, so a crash while saving never destroys the previous file.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from typing import Any, NoReturn

import numpy as np

from ._registry import MODELS, Registry, T
from .layers.base import LAYERS  # noqa: F401  (imports and so registers the built-in layers)
from .losses import LOSSES
from .optimizers import OPTIMIZERS

#: a model of a class in ``MODELS`` (``Sequential``; not imported here, see the docstring)
Model = Any

FORMAT = "fastnn-model"
#: 2: the loss is saved as ``{"class", "config"}`` and the model class is named (1: loss name)
FORMAT_VERSION = 2
HEADER = "__header__"


def _digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def save_model(model: Model, path: str | os.PathLike[str],
               include_optimizer: bool = True) -> None:
    """Write ``model`` to ``path`` atomically (see the module docstring).

    Raises
    ------
    OSError
        If the folder is not writeable.
    """
    from . import __version__

    arrays: dict[str, Any] = {}
    for i, layer in enumerate(model.layers):
        for name, p in layer.params.items():
            arrays[f"{i}.{name}"] = p
    opt = None
    if model.optimizer is not None:
        # without its state, a restored optimizer starts afresh (step 0, zero moments)
        opt = {"class": OPTIMIZERS.name_of(type(model.optimizer)),
               "config": model.optimizer.get_config(),
               "iterations": model.optimizer.iterations if include_optimizer else 0}
        if include_optimizer:
            for key, slots in model.optimizer.state.items():
                for slot, arr in slots.items():
                    arrays[f"opt/{key}/{slot}"] = arr
    config = model.get_config()
    header = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "fastnn_version": __version__,
        "model": MODELS.name_of(type(model)),
        "dtype": config["dtype"],
        "input_shape": config["input_shape"],
        "layers": config["layers"],
        "loss": ({"class": LOSSES.name_of(type(model.loss)), "config": model.loss.get_config()}
                 if model.loss is not None else None),
        "optimizer": opt,
        "seed": config["seed"],
        "epochs_completed": int(getattr(model, "epochs_completed", 0)),
        "arrays": {k: {"shape": list(a.shape), "dtype": str(a.dtype), "sha256": _digest(a)}
                   for k, a in arrays.items()},
    }
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".fastnn-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            contents: dict[str, Any] = {HEADER: np.array(json.dumps(header))}
            np.savez(f, **contents, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _fail(path: str, why: str) -> NoReturn:
    raise ValueError(f"{path}: not a valid fastnn model file: {why}")


def load(path: str | os.PathLike[str]) -> Model:
    """Load a model saved by ``Sequential.save``.

    Returns
    -------
    Sequential
        With the same layers, weights, dtype, loss and (if saved) optimizer state.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a fastnn model, is truncated or corrupted, has a newer format version,
        an array that is missing, extra, of the wrong shape/dtype or whose checksum differs, or a
        pickled object (never unpickled).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such model file: {path}")
    try:
        npz = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        _fail(path, f"cannot be read as .npz ({exc})")
    if not isinstance(npz, np.lib.npyio.NpzFile):
        _fail(path, "not an .npz archive")
    with npz:
        try:
            if HEADER not in npz.files:
                _fail(path, "no header")
            raw = npz[HEADER]
            if raw.dtype.kind != "U" or raw.shape != ():
                _fail(path, "malformed header")
            header = json.loads(str(raw))
        except (ValueError, zipfile.BadZipFile, OSError, EOFError, KeyError) as exc:
            if isinstance(exc, ValueError) and "not a valid fastnn" in str(exc):
                raise
            _fail(path, f"unreadable header ({exc})")
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            _fail(path, "the header does not name the fastnn format")
        version = header.get("format_version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            _fail(path, f"format_version must be an integer >= 1, got {version!r}")
        if version > FORMAT_VERSION:
            raise ValueError(f"{path}: format version {version!r} is newer than this fastnn "
                             f"reads ({FORMAT_VERSION}); upgrade fastnn")
        specs = header.get("arrays")
        if not isinstance(specs, dict):
            _fail(path, "no array list")
        extra = set(npz.files) - set(specs) - {HEADER}
        if extra:
            _fail(path, f"arrays not listed in the header: {sorted(extra)}")
        arrays = {}
        for key, spec in specs.items():
            if key not in npz.files:
                _fail(path, f"array {key!r} is missing")
            try:
                a = npz[key]
            except (ValueError, zipfile.BadZipFile, OSError, EOFError) as exc:
                _fail(path, f"array {key!r} is unreadable ({exc})")
            if list(a.shape) != list(spec.get("shape", [])) or str(a.dtype) != spec.get("dtype"):
                _fail(path, f"array {key!r} has shape {a.shape} dtype {a.dtype}, the header says "
                            f"{spec.get('shape')} {spec.get('dtype')}")
            if _digest(a) != spec.get("sha256"):
                _fail(path, f"array {key!r} fails its checksum")
            arrays[key] = a
    try:
        return _build_from_header(path, header, arrays)
    except ValueError as exc:
        if "not a valid fastnn model" in str(exc):
            raise
        _fail(path, str(exc))
    except (TypeError, AttributeError, KeyError) as exc:
        _fail(path, f"malformed header field ({type(exc).__name__}: {exc})")


def _from_registry(registry: Registry[T], entry: Any, what: str) -> T:
    """An instance from a ``{"class": name, "config": {...}}`` entry (or, in version-1 files, a
    bare class name or alias)."""
    if isinstance(entry, str):
        entry = {"class": entry, "config": {}}
    if not isinstance(entry, dict):
        raise ValueError(f"{what} must be a {{class, config}} entry, got {entry!r}")
    cls = registry.get_class(entry.get("class"))
    config = entry.get("config") or {}
    if not isinstance(config, dict):
        raise ValueError(f"{what} config must be a mapping, got {config!r}")
    try:
        return cls(**config)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} config is invalid ({exc})") from None


def _build_from_header(path: str, header: dict[str, Any],
                       arrays: dict[str, np.ndarray]) -> Model:
    model_cls = MODELS.get_class(header.get("model", "Sequential"))
    model = model_cls.from_config(header)
    for i, layer in enumerate(model.layers):
        for name, p in layer.params.items():
            key = f"{i}.{name}"
            if key not in arrays:
                _fail(path, f"array {key!r} is missing")
            if arrays[key].shape != p.shape or arrays[key].dtype != p.dtype:
                _fail(path, f"array {key!r} does not fit layer {i}")
            layer.params[name] = arrays[key]
    if header.get("loss"):
        model.loss = _from_registry(LOSSES, header["loss"], "loss")
    model.epochs_completed = int(header.get("epochs_completed", 0) or 0)
    opt = header.get("optimizer")
    if opt:
        model.optimizer = _from_registry(OPTIMIZERS, opt, "optimizer")
        model.optimizer.iterations = int(opt.get("iterations", 0))
        for key, a in arrays.items():
            if key.startswith("opt/"):
                _, pkey, slot = key.split("/", 2)
                model.optimizer.state.setdefault(pkey, {})[slot] = a.copy()
    return model
