"""Check what fastnn's sdist and wheel contain.

    python tools/wheel_check.py sdist dist/fastnn-0.1.0.tar.gz
    python tools/wheel_check.py wheel [--repaired] wheelhouse/fastnn-0.1.0-cp311-...manylinux...whl

sdist: the Cython sources (every src_cython/*.pyx, *.pxd, *.h of this checkout), setup.py,
pyproject.toml, MANIFEST.in, README.md, tests/ and the type information (fastnn/py.typed, a
fastnn/_<name>.pyi stub per .pyx); no generated .c, no compiled objects, no
fastnn/_build_info.py, no build/ or dist/ folders.

wheel: one compiled extension fastnn._<name> per src_cython/<name>.pyx and its .pyi stub,
fastnn/py.typed, fastnn/_build_info.py, the fastnn.layers subpackage; no .pyx/.c sources.
``--repaired`` (Linux): a manylinux tag, libgomp grafted into fastnn.libs/ with its licence text
beside it.

Exits 1 and lists the problems if any check fails; prints the name and size otherwise.
"""
import argparse
import re
import sys
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _module(pyx):
    return "_" + Path(pyx).stem.lstrip("_")


def _type_files(root):
    """The PEP 561 marker and one stub per compiled module."""
    stubs = sorted(f"fastnn/{_module(p)}.pyi" for p in (root / "src_cython").glob("*.pyx"))
    return ["fastnn/py.typed"] + stubs


def check_sdist(path, root=ROOT):
    with tarfile.open(path) as tar:
        names = [m.name.split("/", 1)[1] for m in tar.getmembers()
                 if "/" in m.name and m.isfile()]
    problems = []
    wanted = ["setup.py", "pyproject.toml", "MANIFEST.in", "README.md", "PKG-INFO"]
    for pattern in ("*.pyx", "*.pxd", "*.h"):
        wanted += [f"src_cython/{p.name}" for p in sorted((root / "src_cython").glob(pattern))]
    wanted += _type_files(root)
    problems += [f"missing {n}" for n in wanted if n not in names]
    if not any(n.startswith("tests/test_") for n in names):
        problems.append("no tests/")
    bad = re.compile(r"(\.(c|cpp|so|pyd|dylib|dll|o|obj|pyc)$)|(^|/)(build|dist|__pycache__)/"
                     r"|_build_info\.py$")
    problems += [f"should not be in the sdist: {n}" for n in names
                 if bad.search(n) and not n.endswith(".egg-info/SOURCES.txt")]
    return problems, names


def check_wheel(path, repaired=False, root=ROOT):
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
    problems = []
    ext = re.compile(r"^fastnn/(_\w+)\.[^/]*(\.so|\.pyd)$")
    built = {m.group(1) for n in names if (m := ext.match(n))}
    expected = {_module(p) for p in (root / "src_cython").glob("*.pyx")}
    problems += [f"missing extension fastnn.{m}" for m in sorted(expected - built)]
    for n in ("fastnn/__init__.py", "fastnn/_build_info.py", "fastnn/layers/__init__.py",
              *_type_files(root)):
        if n not in names:
            problems.append(f"missing {n}")
    problems += [f"source in the wheel: {n}" for n in names if n.endswith((".pyx", ".c"))]
    if repaired:
        if "manylinux" not in Path(path).name:
            problems.append("not a manylinux wheel")
        libs = [n for n in names if n.startswith("fastnn.libs/")]
        gomp = [n for n in libs if Path(n).name.startswith("libgomp")]
        if not gomp:
            problems.append("libgomp not grafted into fastnn.libs/")
        elif "fastnn.libs/LICENSE-libgomp.txt" not in libs:
            problems.append("fastnn.libs/LICENSE-libgomp.txt missing beside libgomp")
    return problems, names


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=["sdist", "wheel"])
    parser.add_argument("path")
    parser.add_argument("--repaired", action="store_true")
    args = parser.parse_args(argv)
    if args.kind == "sdist":
        problems, names = check_sdist(args.path)
    else:
        problems, names = check_wheel(args.path, args.repaired)
    size = Path(args.path).stat().st_size
    if problems:
        print(f"{args.path}: {len(problems)} problem(s)", file=sys.stderr)
        for p in problems:
            print("  " + p, file=sys.stderr)
        return 1
    print(f"{Path(args.path).name}: {size / 1e6:.2f} MB ({size} bytes), {len(names)} files, ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
