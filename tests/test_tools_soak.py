"""tools/soak.py runs end to end (a few seconds instead of 30 minutes) and reports its figures."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc for RSS")
def test_soak_reports_memory_and_step_figures(tmp_path):
    out = tmp_path / "soak.json"
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "soak.py"), "--minutes", "0.05",
                           "--busy-seconds", "0.5", "--sample-seconds", "0.5", "--threads", "1",
                           "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode in (0, 1), proc.stderr  # 1: a limit exceeded (timing-dependent)
    summary = json.loads(out.read_text())
    assert summary["steps"] > 0 and summary["epochs"] >= 1
    assert summary["rss_after_epoch_1_mib"] > 0 and summary["step_median_ms"] > 0
    assert summary["rss_samples"] and summary["ok"] == (proc.returncode == 0)
