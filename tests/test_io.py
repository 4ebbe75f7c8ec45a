"""Model files: save -> load round trips, optimizer state, refusal of bad files, atomic save."""
import json
import os
import pathlib

import numpy as np
import pytest

import fastnn
from fastnn import (SGD, Activation, Adam, BatchNorm, BinaryCrossEntropy, Dense, Dropout,
                    LayerNorm, Sequential, SoftmaxCrossEntropy)
from fastnn import io as fio

INVALID = "not a valid fastnn model file"


def make_model(dtype="float32", optimizer=None, seed=0):
    m = Sequential([Dense(6, 9, activation="leaky_relu", alpha=0.2), Activation("tanh"),
                    Dense(9, 7, activation="sigmoid"), Dense(7, 4)], dtype=dtype, seed=seed)
    return m.compile(optimizer or Adam(1e-2), SoftmaxCrossEntropy())


def data(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 6)), rng.integers(0, 4, size=n)


def trained(tmp_path, dtype="float32", optimizer=None):
    m = make_model(dtype, optimizer)
    X, y = data()
    m.fit(X, y, epochs=2, batch_size=8, verbose=0)
    path = tmp_path / "model.npz"
    m.save(path)
    return m, path


def read_npz(path):
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    header = json.loads(str(arrays.pop(fio.HEADER)))
    return header, arrays


def write_npz(path, header, arrays):
    with open(path, "wb") as f:
        np.savez(f, **{fio.HEADER: np.array(json.dumps(header))}, **arrays)


def digest(a):
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


# -- round trips --------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_save_load_predict_identical(tmp_path, dtype):
    m, path = trained(tmp_path, dtype)
    loaded = fastnn.load(path)
    X, _ = data(100, seed=1)
    out = loaded.predict(X)
    assert out.dtype == np.dtype(dtype)
    assert np.array_equal(out, m.predict(X))
    assert np.array_equal(loaded.predict_proba(X), m.predict_proba(X))
    assert loaded.dtype == m.dtype and loaded.input_shape == m.input_shape
    assert [lay.get_config() for lay in loaded.layers] == [lay.get_config() for lay in m.layers]
    assert [type(lay) for lay in loaded.layers] == [type(lay) for lay in m.layers]
    assert type(loaded.loss) is SoftmaxCrossEntropy
    assert type(loaded.optimizer) is Adam
    assert loaded.optimizer.get_config() == m.optimizer.get_config()
    assert loaded.optimizer.iterations == m.optimizer.iterations == 10


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("make_opt", [lambda: Adam(1e-2, weight_decay=1e-3),
                                      lambda: SGD(0.05, momentum=0.9, nesterov=True)],
                         ids=["adam", "sgd-nesterov"])
def test_optimizer_state_restored_training_continues_identically(tmp_path, dtype, make_opt):
    m, path = trained(tmp_path, dtype, make_opt())
    loaded = fastnn.load(path)
    for key, slots in m.optimizer.state.items():
        for slot, arr in slots.items():
            assert np.array_equal(loaded.optimizer.state[key][slot], arr)
    X, y = data(16, seed=2)
    for _ in range(2):
        assert loaded.train_on_batch(X, y) == m.train_on_batch(X, y)
    for a, b in zip(m.get_weights(), loaded.get_weights()):
        for k in a:
            assert np.array_equal(a[k], b[k])
    # and a fresh optimizer (no saved state) really would train differently
    fresh = make_model(dtype, make_opt())
    fresh.set_weights(fastnn.load(path).get_weights())
    fresh.train_on_batch(X, y)
    stateful = fastnn.load(path)
    stateful.train_on_batch(X, y)
    assert not np.array_equal(fresh.layers[0].weight, stateful.layers[0].weight)


def test_load_without_optimizer_state_trains_like_a_fresh_optimizer(tmp_path):
    m, _ = trained(tmp_path, "float64", Adam(0.1))
    path = tmp_path / "noopt.npz"
    m.save(path, include_optimizer=False)
    loaded = fastnn.load(path)
    fresh = make_model("float64", Adam(0.1))
    fresh.set_weights(m.get_weights())
    X, y = data(16, seed=3)
    loaded.train_on_batch(X, y)
    fresh.train_on_batch(X, y)
    np.testing.assert_array_equal(loaded.layers[0].weight, fresh.layers[0].weight)


def test_include_optimizer_false_stores_no_state_arrays(tmp_path):
    m, _ = trained(tmp_path)
    path = tmp_path / "noopt.npz"
    m.save(path, include_optimizer=False)
    header, arrays = read_npz(path)
    assert not any(k.startswith("opt/") for k in arrays)
    assert np.array_equal(fastnn.load(path).predict(data()[0]), m.predict(data()[0]))


def test_uncompiled_model_round_trip_and_pathlike(tmp_path):
    m = Sequential([Dense(3, 5, activation="relu"), Dense(5, 2, activation="softmax")],
                   dtype="float64", seed=3)
    path = pathlib.Path(tmp_path) / "plain"  # no .npz suffix: the name is kept as given
    m.save(path)
    assert path.exists() and not (tmp_path / "plain.npz").exists()
    loaded = fastnn.load(str(path))
    assert loaded.loss is None and loaded.optimizer is None
    X = np.random.default_rng(0).standard_normal((8, 3))
    assert np.array_equal(loaded.predict(X), m.predict(X))


def test_binary_model_round_trip(tmp_path):
    m = Sequential([Dense(2, 1)], seed=0).compile(SGD(0.1, momentum=0.5), BinaryCrossEntropy())
    X = np.random.default_rng(0).standard_normal((20, 2))
    m.fit(X, (X[:, 0] > 0).astype(float), epochs=2, batch_size=5, verbose=0)
    m.save(tmp_path / "b.npz")
    loaded = fastnn.load(tmp_path / "b.npz")
    assert type(loaded.loss) is BinaryCrossEntropy
    assert np.array_equal(loaded.predict_proba(X), m.predict_proba(X))


def test_file_is_plain_npz_with_json_header_and_checksums(tmp_path):
    m, path = trained(tmp_path)
    header, arrays = read_npz(path)  # readable with allow_pickle=False
    assert header["format"] == "fastnn-model" and header["format_version"] == 2
    assert set(header["arrays"]) == set(arrays)
    for key, spec in header["arrays"].items():
        assert spec["shape"] == list(arrays[key].shape)
        assert spec["sha256"] == digest(arrays[key])
    assert np.array_equal(arrays["0.weight"], m.layers[0].weight)


# -- refused files ------------------------------------------------------------------------------
def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        fastnn.load(tmp_path / "nope.npz")


def test_truncated_file_raises(tmp_path):
    _, path = trained(tmp_path)
    raw = path.read_bytes()
    for cut in (0, 3, 30, len(raw) // 3, len(raw) // 2, len(raw) - 22, len(raw) - 1):
        bad = tmp_path / f"cut{cut}.npz"
        bad.write_bytes(raw[:cut])
        with pytest.raises(ValueError, match=INVALID):
            fastnn.load(bad)


def test_corrupted_bytes_raise(tmp_path):
    _, path = trained(tmp_path)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # inside an array's data: CRC or checksum catches it
    bad = tmp_path / "flip.npz"
    bad.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=INVALID):
        fastnn.load(bad)


def test_random_bytes_raise(tmp_path):
    bad = tmp_path / "random.npz"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, size=5000, dtype=np.uint8).tobytes())
    with pytest.raises(ValueError, match=INVALID):
        fastnn.load(bad)
    bad.write_bytes(b"PK\x03\x04" + bytes(200))  # looks like a zip, is not
    with pytest.raises(ValueError, match=INVALID):
        fastnn.load(bad)


def test_npy_instead_of_npz_raises(tmp_path):
    bad = tmp_path / "array.npy"
    np.save(bad, np.zeros(3))
    with pytest.raises(ValueError, match=INVALID):
        fastnn.load(bad)


def test_non_fastnn_npz_raises(tmp_path):
    bad = tmp_path / "other.npz"
    np.savez(bad, weights=np.zeros((3, 3)), bias=np.zeros(3))
    with pytest.raises(ValueError, match="no header"):
        fastnn.load(bad)
    np.savez(bad, __header__=np.array(json.dumps({"format": "something-else"})))
    with pytest.raises(ValueError, match="does not name the fastnn format"):
        fastnn.load(bad)
    np.savez(bad, __header__=np.array("{not json"))
    with pytest.raises(ValueError, match="header"):
        fastnn.load(bad)
    np.savez(bad, __header__=np.zeros(3))
    with pytest.raises(ValueError, match="malformed header"):
        fastnn.load(bad)


def test_wrong_array_content_fails_checksum(tmp_path):
    _, path = trained(tmp_path)
    header, arrays = read_npz(path)
    arrays["2.weight"] = arrays["2.weight"] + 1
    write_npz(tmp_path / "bad.npz", header, arrays)
    with pytest.raises(ValueError, match=r"'2.weight'.*checksum"):
        fastnn.load(tmp_path / "bad.npz")


def test_wrong_array_shape_or_dtype_raises(tmp_path):
    _, path = trained(tmp_path)
    header, arrays = read_npz(path)
    a = dict(arrays, **{"0.bias": np.zeros(5, np.float32)})
    write_npz(tmp_path / "bad.npz", header, a)
    with pytest.raises(ValueError, match=r"'0.bias'.*shape"):
        fastnn.load(tmp_path / "bad.npz")
    a = dict(arrays, **{"0.bias": arrays["0.bias"].astype(np.float64)})
    write_npz(tmp_path / "bad.npz", header, a)
    with pytest.raises(ValueError, match=r"'0.bias'.*dtype"):
        fastnn.load(tmp_path / "bad.npz")
    # shape changed consistently in the header too: it no longer fits the layer
    a = dict(arrays, **{"0.bias": np.zeros(5, np.float32)})
    h = json.loads(json.dumps(header))
    h["arrays"]["0.bias"] = {"shape": [5], "dtype": "float32", "sha256": digest(a["0.bias"])}
    write_npz(tmp_path / "bad.npz", h, a)
    with pytest.raises(ValueError, match=r"'0.bias'.*the model's layers need \(9,\) float32"):
        fastnn.load(tmp_path / "bad.npz")


def test_missing_array_raises(tmp_path):
    _, path = trained(tmp_path)
    header, arrays = read_npz(path)
    del arrays["3.bias"]
    write_npz(tmp_path / "bad.npz", header, arrays)
    with pytest.raises(ValueError, match=r"'3.bias' is missing"):
        fastnn.load(tmp_path / "bad.npz")
    # also missing from the header's list: the layer still needs it
    header, arrays = read_npz(path)
    del arrays["3.bias"], header["arrays"]["3.bias"]
    write_npz(tmp_path / "bad2.npz", header, arrays)
    with pytest.raises(ValueError, match=r"'3.bias' is missing"):
        fastnn.load(tmp_path / "bad2.npz")


def test_extra_array_raises(tmp_path):
    _, path = trained(tmp_path)
    header, arrays = read_npz(path)
    arrays["9.weight"] = np.zeros(2, np.float32)
    write_npz(tmp_path / "bad.npz", header, arrays)
    with pytest.raises(ValueError, match=r"not listed in the header.*9.weight"):
        fastnn.load(tmp_path / "bad.npz")


def test_newer_format_version_raises(tmp_path):
    _, path = trained(tmp_path)
    header, arrays = read_npz(path)
    header["format_version"] = fio.FORMAT_VERSION + 1
    write_npz(tmp_path / "new.npz", header, arrays)
    with pytest.raises(ValueError, match="newer"):
        fastnn.load(tmp_path / "new.npz")


def test_unknown_layer_class_or_bad_config_raises(tmp_path):
    _, path = trained(tmp_path)
    header, arrays = read_npz(path)
    header["layers"][1]["class"] = "Dropout3D"
    write_npz(tmp_path / "bad.npz", header, arrays)
    with pytest.raises(ValueError, match="unknown layer .Dropout3D."):
        fastnn.load(tmp_path / "bad.npz")
    header, arrays = read_npz(path)
    header["layers"][0]["config"]["activation"] = "swish"
    write_npz(tmp_path / "bad.npz", header, arrays)
    with pytest.raises(ValueError, match="layer 0 config"):
        fastnn.load(tmp_path / "bad.npz")


@pytest.mark.parametrize("edit", [
    lambda h: h["optimizer"]["config"].update(momentum=0.5),  # TypeError from Adam(**config)
    lambda h: h.update(dtype="float16"),  # TypeError from Sequential
    lambda h: h.update(optimizer="adam"),  # AttributeError: 'str' object has no attribute 'get'
    lambda h: h["optimizer"].update(iterations="x"),  # ValueError: invalid literal for int()
], ids=["optimizer-config", "dtype", "optimizer-not-dict", "iterations"])
def test_malformed_header_fields_raise_value_error(tmp_path, edit):
    _, path = trained(tmp_path)
    header, arrays = read_npz(path)
    edit(header)
    write_npz(tmp_path / "bad.npz", header, arrays)
    with pytest.raises(ValueError, match=INVALID):
        fastnn.load(tmp_path / "bad.npz")


class _Trap:
    """Unpickling this touches a marker file: proof that something was executed."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


@pytest.mark.parametrize("where", ["extra", "listed", "header"])
def test_pickled_object_array_refused_and_never_executed(tmp_path, where):
    _, path = trained(tmp_path)
    header, arrays = read_npz(path)
    marker = tmp_path / "executed"
    trap = np.empty(1, dtype=object)
    trap[0] = _Trap(str(marker))
    bad = tmp_path / "pickle.npz"
    if where == "extra":
        arrays["evil"] = trap
        write_npz(bad, header, arrays)
    elif where == "listed":
        arrays["0.weight"] = trap
        write_npz(bad, header, arrays)
    else:
        with open(bad, "wb") as f:
            np.savez(f, __header__=trap, **arrays)
    with pytest.raises(ValueError, match=INVALID):
        fastnn.load(bad)
    assert not marker.exists()
    # the trap is real: unpickling it does touch the marker
    with np.load(bad, allow_pickle=True) as f:
        f["evil" if where == "extra" else ("0.weight" if where == "listed" else "__header__")]
    assert marker.exists()


# -- atomic save --------------------------------------------------------------------------------
def test_failed_save_keeps_the_old_file(tmp_path, monkeypatch):
    m, path = trained(tmp_path)
    old_bytes = path.read_bytes()
    other = make_model(seed=5)
    real_savez = np.savez

    def failing_savez(file, *args, **kwds):
        file.write(b"PK\x03\x04 partial data")  # something is written, then the disk "fails"
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", failing_savez)
    with pytest.raises(OSError, match="disk full"):
        other.save(path)
    monkeypatch.setattr(np, "savez", real_savez)
    assert path.read_bytes() == old_bytes
    assert sorted(os.listdir(tmp_path)) == ["model.npz"]  # no temporary file left behind
    X, _ = data()
    assert np.array_equal(fastnn.load(path).predict(X), m.predict(X))
    # a later save succeeds and replaces it
    other.save(path)
    assert np.array_equal(fastnn.load(path).predict(X), other.predict(X))


def test_interrupted_save_keeps_the_old_file(tmp_path, monkeypatch):
    m, path = trained(tmp_path)
    old_bytes = path.read_bytes()

    def interrupted(*args, **kwds):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        make_model(seed=6).save(path)
    monkeypatch.undo()
    assert path.read_bytes() == old_bytes
    assert sorted(os.listdir(tmp_path)) == ["model.npz"]


# -- registries: a user's own classes round-trip; version-1 files still load ---------------------
class ScaledMSE(fastnn.losses.Loss):
    """A user's loss with a constructor argument: ``scale * mean((output - target)^2)``."""

    def __init__(self, scale=1.0):
        super().__init__()
        self.scale = float(scale)

    def get_config(self):
        return {"scale": self.scale}

    def prepare_target(self, target, output_shape):
        return np.asarray(target, dtype=np.float64).reshape(output_shape)

    def forward(self, output, target, prepared=False):
        z = self.check_output(output)
        t = target if prepared else self.prepare_target(target, z.shape)
        d = z - t
        self._grad = (2.0 * self.scale / d.size * d).astype(z.dtype)
        return float(self.scale * np.mean(d.astype(np.float64) ** 2))


def test_user_loss_subclass_saves_and_loads_with_its_config(tmp_path):
    assert fastnn.losses.LOSSES["ScaledMSE"] is ScaledMSE  # registered by subclassing
    rng = np.random.default_rng(3)
    X, Y = rng.standard_normal((32, 5)), rng.standard_normal((32, 2))
    m = Sequential([Dense(5, 8, activation="tanh"), Dense(8, 2)], seed=1)
    m.compile(SGD(0.05), ScaledMSE(scale=2.5))
    m.fit(X, Y, epochs=2, batch_size=8, verbose=0)
    m.save(tmp_path / "user.npz")
    header, _ = read_npz(tmp_path / "user.npz")
    assert header["loss"] == {"class": "ScaledMSE", "config": {"scale": 2.5}}
    back = fastnn.load(tmp_path / "user.npz")
    assert type(back.loss) is ScaledMSE and back.loss.scale == 2.5
    assert back.evaluate(X, Y)["loss"] == m.evaluate(X, Y)["loss"]


def test_unregistered_loss_is_refused_with_its_name(tmp_path):
    _, path = trained(tmp_path)
    header, arrays = read_npz(path)
    header["loss"] = {"class": "NotImportedLoss", "config": {}}
    write_npz(tmp_path / "bad.npz", header, arrays)
    with pytest.raises(ValueError, match="unknown loss 'NotImportedLoss'"):
        fastnn.load(tmp_path / "bad.npz")


def test_format_version_1_file_with_loss_name_loads(tmp_path):
    m, path = trained(tmp_path)
    header, arrays = read_npz(path)
    header["format_version"] = 1
    header["loss"] = "SoftmaxCrossEntropy"  # version 1 saved the class name only
    del header["model"]
    write_npz(tmp_path / "v1.npz", header, arrays)
    back = fastnn.load(tmp_path / "v1.npz")
    assert isinstance(back.loss, SoftmaxCrossEntropy)
    X, y = data()
    np.testing.assert_array_equal(back.predict(X), m.predict(X))


def test_io_does_not_import_the_model_module():
    import ast

    tree = ast.parse(pathlib.Path(fio.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "model" not in imported and ".model" not in imported
    assert all("model" != (node.module or "") for node in ast.walk(tree)
               if isinstance(node, ast.ImportFrom))


# -- hostile files: refused before anything large is decompressed or allocated -------------------
MiB = 1 << 20


def _npy_header(shape, dtype="<f4"):
    buf = __import__("io").BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False,
                                               "shape": tuple(shape)})
    return buf.getvalue()


def _write_member(zf, name, head, zero_bytes, compress=True):
    """A member ``head + zero_bytes zeros``, streamed (never held in memory)."""
    import zipfile

    info = zipfile.ZipInfo(name)
    info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zf.open(info, "w", force_zip64=True) as f:
        f.write(head)
        chunk = bytes(MiB)
        left = zero_bytes
        while left > 0:
            f.write(chunk[:min(left, MiB)])
            left -= MiB


def _hostile(tmp_path, replace):
    """The small model's file with the members named in ``replace`` (name -> (head, zeros)) put
    in as written by :func:`_write_member`."""
    import zipfile

    _, path = trained(tmp_path)
    header, arrays = read_npz(path)
    out = tmp_path / "hostile.npz"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
        members = {fio.HEADER: np.array(json.dumps(header)), **arrays}
        for name, a in members.items():
            if name in replace:
                _write_member(zf, name + ".npy", *replace[name])
            else:
                buf = __import__("io").BytesIO()
                np.save(buf, a, allow_pickle=False)
                zf.writestr(name + ".npy", buf.getvalue())
    return out, header


def _peak_load_mib(path):
    import tracemalloc

    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=INVALID) as err:
            fastnn.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak / MiB, str(err.value)


def test_array_member_inflating_far_beyond_its_layer_is_refused_unread(tmp_path):
    # 256 MiB of zeros (a consistent .npy of 64 Mi float32) deflate to ~0.25 MB; the layer
    # Dense(6, 9) needs 216 bytes
    path, _ = _hostile(tmp_path, {"0.weight": (_npy_header((64 * MiB,)), 256 * MiB)})
    assert path.stat().st_size < 2 * MiB
    peak, msg = _peak_load_mib(path)
    assert peak < 64, f"loading grew traced memory by {peak:.0f} MiB"
    assert "0.weight" in msg


def test_header_member_inflating_to_hundreds_of_mib_is_refused_unread(tmp_path):
    head = _npy_header((), "<U%d" % (64 * MiB))  # a 0-d string of 256 MiB (4 bytes per char)
    path, _ = _hostile(tmp_path, {fio.HEADER: (head, 256 * MiB)})
    peak, msg = _peak_load_mib(path)
    assert peak < 64, f"loading grew traced memory by {peak:.0f} MiB"
    assert "header" in msg


def test_npy_header_declaring_a_huge_shape_is_a_value_error_not_memory_error(tmp_path):
    # 64 GiB declared, a few bytes present: numpy alone raises MemoryError allocating it
    path, _ = _hostile(tmp_path, {"0.weight": (_npy_header((1 << 17, 1 << 17)), 64)})
    peak, msg = _peak_load_mib(path)
    assert peak < 64 and "the model's layers need (6, 9)" in msg


def test_forged_config_with_a_huge_layer_is_refused_before_building(tmp_path):
    # the header asks for Dense(10**6, 10**5) (400 GB of float32); its arrays stay small
    import zipfile

    _, path = trained(tmp_path)
    header, arrays = read_npz(path)
    header["layers"][0]["config"].update(in_features=10**6, out_features=10**5)
    write_npz(tmp_path / "huge.npz", header, arrays)
    peak, msg = _peak_load_mib(tmp_path / "huge.npz")
    assert peak < 64 and "(1000000, 100000)" in msg
    # a member that declares the full 400 GB inflated size is refused by its compression ratio
    out = tmp_path / "ratio.npz"
    with zipfile.ZipFile(tmp_path / "huge.npz") as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "0.weight.npy":
                _write_member(dst, info.filename, _npy_header((10**6, 10**5)), 4 * MiB)
            else:
                dst.writestr(info, data)
    peak, msg = _peak_load_mib(out)
    assert peak < 64 and "0.weight" in msg


def test_save_into_a_missing_folder_names_the_users_path(tmp_path):
    m, _ = trained(tmp_path)
    target = tmp_path / "missing_dir" / "m.npz"
    with pytest.raises(FileNotFoundError) as err:
        m.save(target)
    assert str(target) in str(err.value) and "fastnn-tmp" not in str(err.value)


def test_a_killed_save_leaves_at_most_one_temporary_file_which_the_next_save_reuses(tmp_path):
    m, path = trained(tmp_path)
    tmp = fio._temporary_name(path)
    with open(tmp, "wb") as f:  # what a save killed half-way leaves behind
        f.write(b"torn")
    m.save(path)
    assert not os.path.exists(tmp)
    assert [p.name for p in tmp_path.iterdir() if "fastnn-tmp" in p.name] == []
    fastnn.load(path)


def test_header_member_declaring_a_huge_numeric_array_is_refused_unallocated(tmp_path):
    # found by tests/test_fuzz_model_files.py: a small header member whose .npy header declares
    # float64 (3165727488,) made numpy allocate 23.6 GiB before the header was checked
    path, _ = _hostile(tmp_path, {fio.HEADER: (_npy_header((3165727488,), "<f8"), 64)})
    peak, msg = _peak_load_mib(path)
    assert peak < 64 and "malformed header" in msg


# -- non-trainable state: BatchNorm's running statistics, Dropout's step --------------------------
def make_norm_model(dtype="float32", seed=0):
    m = Sequential([Dense(6, 12, activation="relu"), BatchNorm(12, momentum=0.2), Dropout(0.3),
                    LayerNorm(12), Dense(12, 4)], dtype=dtype, seed=seed)
    return m.compile(Adam(1e-2), SoftmaxCrossEntropy())


def norm_trained(tmp_path, dtype="float32", epochs=2):
    m = make_norm_model(dtype)
    X, y = data()
    m.fit(X, y, epochs=epochs, batch_size=8, verbose=0)
    path = tmp_path / "norm.npz"
    m.save(path)
    return m, path


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_running_statistics_and_dropout_step_round_trip(tmp_path, dtype):
    m, path = norm_trained(tmp_path, dtype)
    header, arrays = read_npz(path)
    assert set(k for k in arrays if k.startswith(fio.BUFFER_PREFIX)) == {
        "buffer/1.running_mean", "buffer/1.running_var"}
    assert not any(k.startswith("opt/buffer") or "running" in k for k in arrays
                   if k.startswith("opt/"))  # not trained: no optimizer slots
    assert header["layer_state"] == [{}, {}, {"step": 10}, {}, {}]
    loaded = fastnn.load(path)
    bn, lbn = m.layers[1], loaded.layers[1]
    assert np.any(bn.running_mean != 0) and np.any(bn.running_var != 1)
    np.testing.assert_array_equal(lbn.running_mean, bn.running_mean)
    np.testing.assert_array_equal(lbn.running_var, bn.running_var)
    assert lbn.running_mean.dtype == np.dtype(dtype)
    assert loaded.layers[2].step == 10 and loaded.layers[2].seed == m.layers[2].seed
    X, _ = data(50, seed=1)
    np.testing.assert_array_equal(loaded.predict(X), m.predict(X))


def test_resumed_training_draws_the_same_masks_as_an_uninterrupted_run(tmp_path):
    X, y = data()
    whole = make_norm_model()
    whole.fit(X, y, epochs=3, batch_size=8, verbose=0)
    part = make_norm_model()
    part.fit(X, y, epochs=1, batch_size=8, verbose=0)
    part.save(tmp_path / "ckpt.npz")
    resumed = fastnn.load(tmp_path / "ckpt.npz")
    resumed.fit(X, y, epochs=3, batch_size=8, verbose=0, initial_epoch=1)
    assert resumed.layers[2].step == whole.layers[2].step == 15
    for a, b in zip(whole.get_weights(), resumed.get_weights()):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    np.testing.assert_array_equal(resumed.layers[1].running_var, whole.layers[1].running_var)
    # without the saved step the resumed run would have drawn the first epoch's masks again
    restarted = fastnn.load(tmp_path / "ckpt.npz")
    restarted.layers[2].step = 0
    restarted.fit(X, y, epochs=3, batch_size=8, verbose=0, initial_epoch=1)
    assert not np.array_equal(restarted.layers[0].weight, whole.layers[0].weight)


def test_file_without_layer_state_loads_with_step_zero(tmp_path):
    _, path = norm_trained(tmp_path)
    header, arrays = read_npz(path)
    del header["layer_state"]
    write_npz(tmp_path / "old.npz", header, arrays)
    assert fastnn.load(tmp_path / "old.npz").layers[2].step == 0


@pytest.mark.parametrize("state", [[{}, {}, {"step": -1}, {}, {}], [{}, {}, {"step": 1.5}, {}, {}],
                                   [{}, {"steps": 3}, {}, {}, {}], [{}], "x",
                                   [{}, {}, [], {}, {}]],
                         ids=["negative", "float", "unknown-key", "short", "not-list",
                              "not-dict"])
def test_bad_layer_state_is_refused(tmp_path, state):
    _, path = norm_trained(tmp_path)
    header, arrays = read_npz(path)
    header["layer_state"] = state
    write_npz(tmp_path / "bad.npz", header, arrays)
    with pytest.raises(ValueError, match=INVALID):
        fastnn.load(tmp_path / "bad.npz")


def test_missing_or_misshapen_buffer_is_refused(tmp_path):
    _, path = norm_trained(tmp_path)
    header, arrays = read_npz(path)
    del arrays["buffer/1.running_var"], header["arrays"]["buffer/1.running_var"]
    write_npz(tmp_path / "bad.npz", header, arrays)
    with pytest.raises(ValueError, match=r"'buffer/1.running_var' is missing"):
        fastnn.load(tmp_path / "bad.npz")
    header, arrays = read_npz(path)
    arrays["buffer/1.running_var"] = np.ones(13, np.float32)
    header["arrays"]["buffer/1.running_var"] = {
        "shape": [13], "dtype": "float32", "sha256": digest(arrays["buffer/1.running_var"])}
    write_npz(tmp_path / "bad.npz", header, arrays)
    with pytest.raises(ValueError, match=r"'buffer/1.running_var'.*need \(12,\) float32"):
        fastnn.load(tmp_path / "bad.npz")
    header, arrays = read_npz(path)
    arrays["buffer/3.running_mean"] = np.zeros(12, np.float32)  # LayerNorm has no buffers
    header["arrays"]["buffer/3.running_mean"] = {
        "shape": [12], "dtype": "float32", "sha256": digest(arrays["buffer/3.running_mean"])}
    write_npz(tmp_path / "bad.npz", header, arrays)
    with pytest.raises(ValueError, match="arrays the model does not have"):
        fastnn.load(tmp_path / "bad.npz")
