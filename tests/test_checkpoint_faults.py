"""Fault injection: ``kill -9`` a process while it saves a model, many times. The file on disk is
always a complete model (the previous save or the new one, never torn), and at most one temporary
file (``.<name>.fastnn-tmp``) ever exists beside it, reused by the next save.

The kill points come from a seeded generator; where the kill lands in the save (writing, fsync,
rename) depends on timing, which is the point: the assertions hold wherever it lands.
"""
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

import fastnn

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")]

SAVER = r"""
import signal, sys
import numpy as np
import fastnn
from fastnn import Dense, Sequential

signal.signal(signal.SIGINT, signal.default_int_handler)
path, start = sys.argv[1], int(sys.argv[2])
fastnn.set_num_threads(1)
model = Sequential([Dense(256, 512, activation="relu"), Dense(512, 10)], seed=0)
model.compile("adam", "softmax_cross_entropy")
k = start
while True:
    for layer in model.layers:  # every array of save number k holds the value k
        for name in layer.params:
            layer.params[name] = np.full(layer.params[name].shape, k)
    model.save(path)
    if k == start:
        print("ready", flush=True)
    k += 1
"""

ROUNDS = 50


def _version(path):
    """The save number of a complete file (every parameter holds it), or raise."""
    model = fastnn.load(path)
    values = {float(v) for layer in model.layers for p in layer.params.values()
              for v in np.unique(p)}
    assert len(values) == 1, f"a file mixing saves {sorted(values)}"
    return int(values.pop())


def test_kill_9_while_saving_never_leaves_a_torn_file_or_stray_temporaries(tmp_path):
    path = tmp_path / "ckpt.npz"
    rng = np.random.default_rng(2024)
    start, versions, temps_seen = 0, [], 0
    for _ in range(ROUNDS):
        child = subprocess.Popen([sys.executable, "-c", SAVER, str(path), str(start)],
                                 stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout.readline().strip() == "ready"
            try:
                child.wait(timeout=float(rng.uniform(0.0, 0.25)))
            except subprocess.TimeoutExpired:
                pass
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
            child.stdout.close()
        temps = [p for p in os.listdir(tmp_path) if p != path.name]
        assert len(temps) <= 1 and all(p == ".ckpt.npz.fastnn-tmp" for p in temps), temps
        temps_seen += len(temps)
        v = _version(path)  # loads: complete and consistent
        assert v >= start  # this round's first save completed before the kill
        versions.append(v)
        start = v + 1
    assert len(versions) == ROUNDS
