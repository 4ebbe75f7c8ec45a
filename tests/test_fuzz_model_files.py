"""Fuzzing ``fastnn.load`` with damaged and forged files: whatever the bytes, it returns a model
or raises ValueError in fastnn's words (never another exception, a crash, or a large allocation).

The mutations start from a real saved model: bytes overwritten anywhere in the file, the file cut,
or one member (header or array) replaced by other bytes, with or without compression. The
hypothesis profile in conftest.py makes the examples reproducible in CI.
"""
import io
import tracemalloc
import zipfile

import numpy as np
import pytest

import fastnn
from fastnn import io as fio

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

FUZZ = settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
MiB = 1 << 20


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    m = fastnn.Sequential([fastnn.Dense(5, 4, activation="relu"), fastnn.Dense(4, 3)], seed=0)
    m.compile(fastnn.Adam(1e-2), fastnn.SoftmaxCrossEntropy())
    rng = np.random.default_rng(0)
    m.fit(rng.standard_normal((16, 5)), rng.integers(0, 3, 16), epochs=1, batch_size=8,
          verbose=0)
    path = tmp_path_factory.mktemp("fuzz") / "m.npz"
    m.save(path)
    return path.read_bytes()


def _load_bytes(tmp_path, raw, name):
    path = tmp_path / name
    path.write_bytes(raw)
    tracemalloc.start()
    try:
        try:
            fastnn.load(path)
        except ValueError as exc:
            assert "not a valid fastnn model file" in str(exc) or "newer than" in str(exc), exc
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * MiB


@FUZZ
@given(data=st.data())
def test_overwritten_or_cut_bytes(tmp_path, saved, data):
    raw = bytearray(saved)
    for _ in range(data.draw(st.integers(1, 8), label="edits")):
        at = data.draw(st.integers(0, len(raw) - 1), label="at")
        chunk = data.draw(st.binary(min_size=1, max_size=16), label="bytes")
        raw[at:at + len(chunk)] = chunk
    if data.draw(st.booleans(), label="cut"):
        raw = raw[:data.draw(st.integers(0, len(raw)), label="length")]
    _load_bytes(tmp_path, bytes(raw), "mutated.npz")


@FUZZ
@given(data=st.data())
def test_replaced_member(tmp_path, saved, data):
    with zipfile.ZipFile(io.BytesIO(saved)) as zf:
        members = {i.filename: zf.read(i) for i in zf.infolist()}
    name = data.draw(st.sampled_from(sorted(members)), label="member")
    kind = data.draw(st.sampled_from(["random", "npy", "truncated"]), label="kind")
    if kind == "random":
        members[name] = data.draw(st.binary(max_size=300), label="content")
    elif kind == "truncated":
        members[name] = members[name][:data.draw(st.integers(0, len(members[name])))]
    else:  # a well-formed .npy of another shape/dtype, maybe huge in its header only
        shape = tuple(data.draw(st.lists(st.integers(0, 1 << 20), max_size=3), label="shape"))
        dtype = data.draw(st.sampled_from(["<f4", "<f8", "<i8", "|u1", "<U4", "|O"]))
        head = io.BytesIO()
        np.lib.format.write_array_header_1_0(head, {"descr": dtype, "fortran_order":
                                                    data.draw(st.booleans()), "shape": shape})
        members[name] = head.getvalue() + bytes(data.draw(st.integers(0, 256)))
    out = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if data.draw(st.booleans(), label="deflate") else \
        zipfile.ZIP_STORED
    with zipfile.ZipFile(out, "w", method) as zf:
        for n, content in members.items():
            zf.writestr(n, content)
    _load_bytes(tmp_path, out.getvalue(), "replaced.npz")


def test_the_unmutated_file_loads(tmp_path, saved):
    path = tmp_path / "m.npz"
    path.write_bytes(saved)
    assert isinstance(fastnn.load(path), fastnn.Sequential)
    assert fio.HEADER == "__header__"
