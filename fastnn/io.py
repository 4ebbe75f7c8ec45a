"""Model files: a versioned ``.npz`` that never unpickles.

Layout: one array per parameter, named ``"<layer index>.<name>"`` (optimizer state under
``"opt/<key>/<slot>"``, a layer's non-trainable arrays, e.g. BatchNorm's running statistics,
under ``"buffer/<layer index>.<name>"``), and ``"__header__"``: a JSON document (a 0-d unicode
array) with the format name and version, the fastnn version, the model class, dtype and input
shape, every layer's class and config, each layer's JSON state (``"layer_state"``, e.g.
Dropout's step counter; absent from older files), the loss's and the optimizer's class and
config, and, for every array, its shape, dtype and SHA-256. Classes are looked up by name in
the registries (``fastnn._registry.MODELS``, ``fastnn.layers.LAYERS``, ``fastnn.losses.LOSSES``,
``fastnn.optimizers.OPTIMIZERS``), so a user's own subclass loads once its module is imported;
this module never imports the model module. ``load`` opens
the file with ``allow_pickle=False``, checks each array against the header before using it and
refuses arrays the header does not list. Saving writes a temporary file in the same folder
(``.<name>.fastnn-tmp``, one per target, reused by the next save) and renames it, so a crash while
saving never destroys the previous file.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
import zlib
from typing import IO, Any, NoReturn

import numpy as np

from ._registry import MODELS, Registry, T
from .layers.base import LAYERS
from .losses import LOSSES
from .metrics import METRICS
from .optimizers import OPTIMIZERS

#: a model of a class in ``MODELS`` (``Sequential``; not imported here, see the docstring)
Model = Any

FORMAT = "fastnn-model"
#: 2: the loss is saved as ``{"class", "config"}`` and the model class is named (1: loss name)
FORMAT_VERSION = 2
HEADER = "__header__"
#: prefix of the keys of the layers' non-trainable arrays (``Layer.buffers``)
BUFFER_PREFIX = "buffer/"


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
        for name, b in layer.buffers.items():
            arrays[f"{BUFFER_PREFIX}{i}.{name}"] = b
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
        "layer_state": [layer.get_state() for layer in model.layers],
        "loss": ({"class": LOSSES.name_of(type(model.loss)), "config": model.loss.get_config()}
                 if model.loss is not None else None),
        "optimizer": opt,
        "metrics": [{"class": METRICS.name_of(type(m)), "config": m.get_config()}
                    for m in getattr(model, "metrics", [])],
        "seed": config["seed"],
        "epochs_completed": int(getattr(model, "epochs_completed", 0)),
        "arrays": {k: {"shape": list(a.shape), "dtype": str(a.dtype), "sha256": _digest(a)}
                   for k, a in arrays.items()},
    }
    path = os.fspath(path)
    tmp = _temporary_name(path)
    try:
        # one temporary name per target: a save killed half-way leaves at most this file, and
        # the next save to the same path truncates and reuses it
        with open(tmp, "wb") as f:
            contents: dict[str, Any] = {HEADER: np.array(json.dumps(header))}
            np.savez(f, **contents, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        _discard(tmp)
        raise type(exc)(exc.errno, f"cannot save the model to {path!r}: "
                                   f"{exc.strerror or exc}") from None
    except BaseException:
        _discard(tmp)
        raise


def _temporary_name(path: str) -> str:
    """``<folder>/.<name>.fastnn-tmp``: where ``save_model`` writes before renaming to ``path``."""
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{name}.fastnn-tmp")


def _discard(tmp: str) -> None:
    try:
        os.unlink(tmp)
    except OSError:
        pass


def _fail(path: str, why: str) -> NoReturn:
    raise ValueError(f"{path}: not a valid fastnn model file: {why}")


#: the JSON header member may not inflate beyond this
HEADER_MAX_BYTES = 1 << 20
#: longest .npy header accepted (numpy writes 128 bytes; numpy's own limit is 10,000)
NPY_HEADER_MAX_BYTES = 10_000
#: deflate cannot expand data more than ~1032 times; a member declaring more is forged
MAX_DEFLATE_RATIO = 1100


def _check_member(path: str, info: zipfile.ZipInfo, limit: int) -> None:
    """Refuse a zip member before decompressing it: unknown compression, a declared size above
    ``limit``, or a declared size that its compressed size cannot produce."""
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        _fail(path, f"member {info.filename!r} uses an unsupported compression method")
    if info.file_size > limit:
        _fail(path, f"member {info.filename!r} declares {info.file_size} bytes, more than the "
                    f"{limit} it may hold")
    if info.compress_type == zipfile.ZIP_DEFLATED and \
            info.file_size > MAX_DEFLATE_RATIO * info.compress_size + 4096:
        _fail(path, f"member {info.filename!r} declares an impossible compression ratio")


def _npy_header(path: str, f: IO[bytes], what: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    """``(shape, fortran_order, dtype)`` from the .npy header at the start of ``f`` (versions 1.0
    and 2.0, at most ``NPY_HEADER_MAX_BYTES``), read without allocating the array."""
    version = np.lib.format.read_magic(f)
    reader = {(1, 0): np.lib.format.read_array_header_1_0,
              (2, 0): np.lib.format.read_array_header_2_0}.get(version)
    if reader is None:
        _fail(path, f"{what} has .npy version {version}")
    return reader(f, max_header_size=NPY_HEADER_MAX_BYTES)


def _read_header(path: str, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> Any:
    _check_member(path, info, HEADER_MAX_BYTES)
    with zf.open(info) as f:
        data = f.read(HEADER_MAX_BYTES + 1)
    if len(data) > HEADER_MAX_BYTES:
        _fail(path, f"the header is larger than {HEADER_MAX_BYTES} bytes")
    f = io.BytesIO(data)
    shape, fortran, dtype = _npy_header(path, f, "the header")
    # check what the .npy header declares before numpy allocates anything for it
    if dtype.kind != "U" or tuple(shape) != () or len(data) - f.tell() != dtype.itemsize:
        _fail(path, "malformed header (not one JSON string)")
    return json.loads(str(np.frombuffer(data, dtype=dtype, offset=f.tell())[0]))


def _read_array(path: str, zf: zipfile.ZipFile, info: zipfile.ZipInfo, key: str,
                shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """The array of member ``info``, after checking its .npy header declares exactly ``shape``
    and ``dtype`` (C order) and its size fits; at most ``nbytes`` are ever decompressed."""
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    _check_member(path, info, nbytes + NPY_HEADER_MAX_BYTES)
    with zf.open(info) as f:
        got_shape, fortran, got_dtype = _npy_header(path, f, f"array {key!r}")
        if tuple(got_shape) != tuple(shape) or got_dtype != dtype or fortran:
            _fail(path, f"array {key!r} is declared with shape {tuple(got_shape)} dtype "
                        f"{got_dtype}{' (Fortran order)' if fortran else ''}; the model's "
                        f"layers need {tuple(shape)} {dtype}")
        if info.file_size != f.tell() + nbytes:
            _fail(path, f"array {key!r} has {info.file_size - f.tell()} data bytes, its shape "
                        f"needs {nbytes}")
        data = f.read(nbytes)
    if len(data) != nbytes:
        _fail(path, f"array {key!r} is truncated")
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def _expected_arrays(header: dict[str, Any]) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """``{key: (shape, dtype)}`` of every array the header's model needs: parameters from the
    layers rebuilt from their configs (no weights allocated), optimizer slots of the optimizer
    rebuilt from its config. Never from the header's own array list, which a forger edits too."""
    dtype = header.get("dtype", "float32")
    if dtype not in ("float32", "float64", "mixed_bfloat16"):
        raise ValueError(f"dtype must be 'float32', 'float64' or 'mixed_bfloat16', got {dtype!r}")
    # mixed_bfloat16 (Sequential's dtype policy) keeps float32 parameters
    dtype = np.dtype("float32" if dtype == "mixed_bfloat16" else dtype).newbyteorder("<")
    expected = {}
    buffers = {}
    for i, entry in enumerate(header.get("layers") or []):
        layer = _from_registry(LAYERS, entry, f"layer {i}")
        for name, shape in layer.param_shapes().items():
            expected[f"{i}.{name}"] = (tuple(shape), dtype)
        for name, shape in layer.buffer_shapes().items():
            buffers[f"{BUFFER_PREFIX}{i}.{name}"] = (tuple(shape), dtype)
    opt = header.get("optimizer")
    if opt and opt.get("iterations", 0):
        optimizer = _from_registry(OPTIMIZERS, opt, "optimizer")
        for key, (shape, _) in list(expected.items()):
            for slot in optimizer.active_slots():
                expected[f"opt/{key}/{slot}"] = (shape, dtype)
    expected.update(buffers)  # not trained: no optimizer slots
    return expected


def load(path: str | os.PathLike[str]) -> Model:
    """Load a model saved by ``Sequential.save``.

    The file is checked before any array is decompressed: the header member is at most
    ``HEADER_MAX_BYTES``; every array's .npy header must declare the shape and dtype that the
    layers rebuilt from the header's configs need, and its member's size must match, so memory
    use is bounded by the model the header describes (and that by the file's size), whatever a
    forged file declares.

    Returns
    -------
    Sequential
        With the same layers, weights, dtype, loss and (if saved) optimizer state.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a fastnn model, is truncated, corrupted or forged, has a newer format
        version, an array that is missing, extra, of the wrong shape/dtype or whose checksum
        differs, a class that is not registered, or a pickled object (never unpickled).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such model file: {path}")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        _fail(path, f"cannot be read as .npz ({exc})")
    try:
        with zf:
            header, arrays = _read_checked(path, zf)
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
        _fail(path, f"unreadable ({type(exc).__name__}: {exc})")
    except (TypeError, AttributeError, KeyError) as exc:
        _fail(path, f"malformed header field ({type(exc).__name__}: {exc})")
    except ValueError as exc:
        if "not a valid fastnn model" in str(exc) or "is newer than this fastnn" in str(exc):
            raise
        _fail(path, str(exc))
    try:
        return _build_from_header(path, header, arrays)
    except ValueError as exc:
        if "not a valid fastnn model" in str(exc):
            raise
        _fail(path, str(exc))
    except (TypeError, AttributeError, KeyError) as exc:
        _fail(path, f"malformed header field ({type(exc).__name__}: {exc})")


def _read_checked(path: str,
                  zf: zipfile.ZipFile) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    members = {}
    for info in zf.infolist():
        if not info.filename.endswith(".npy"):
            _fail(path, f"member {info.filename!r} is not an .npy array")
        members[info.filename[:-len(".npy")]] = info
    if HEADER not in members:
        _fail(path, "no header")
    try:
        header = _read_header(path, zf, members[HEADER])
    except ValueError as exc:
        if "not a valid fastnn" in str(exc):
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
    extra = set(members) - set(specs) - {HEADER}
    if extra:
        _fail(path, f"arrays not listed in the header: {sorted(extra)}")
    expected = _expected_arrays(header)
    unexpected = set(specs) - set(expected)
    if unexpected:
        _fail(path, f"arrays the model does not have: {sorted(unexpected)}")
    arrays = {}
    for key in specs:
        if key not in members:
            _fail(path, f"array {key!r} is missing")
        shape, dtype = expected[key]
        a = _read_array(path, zf, members[key], key, shape, dtype)
        spec = specs[key]
        if list(a.shape) != list(spec.get("shape", [])) or str(a.dtype) != spec.get("dtype"):
            _fail(path, f"array {key!r} has shape {a.shape} dtype {a.dtype}, the header says "
                        f"{spec.get('shape')} {spec.get('dtype')}")
        if _digest(a) != spec.get("sha256"):
            _fail(path, f"array {key!r} fails its checksum")
        arrays[key] = a
    return header, arrays


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
        for name, b in layer.buffers.items():
            key = f"{BUFFER_PREFIX}{i}.{name}"
            if key not in arrays:
                _fail(path, f"array {key!r} is missing")
            if arrays[key].shape != b.shape or arrays[key].dtype != b.dtype:
                _fail(path, f"array {key!r} does not fit layer {i}")
            layer.buffers[name] = arrays[key]
    states = header.get("layer_state")
    if states is not None:  # absent from files written before layers had state
        if not isinstance(states, list) or len(states) != len(model.layers):
            _fail(path, f"layer_state must be a list of {len(model.layers)} entries, got "
                        f"{states!r:.200}")
        for i, (layer, state) in enumerate(zip(model.layers, states)):
            try:
                layer.set_state(state)
            except (TypeError, ValueError) as exc:
                _fail(path, f"layer {i} state is invalid ({exc})")
    if header.get("loss"):
        model.loss = _from_registry(LOSSES, header["loss"], "loss")
        metrics = header.get("metrics")
        if metrics is None:  # a file from before compile(metrics=): the loss's own metric
            metrics = [{"class": model.loss.metric}] if model.loss.metric else []
        if not isinstance(metrics, list):
            _fail(path, f"the metrics entry is not a list: {metrics!r}")
        model.metrics = [_from_registry(METRICS, m, "metric") for m in metrics]
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
