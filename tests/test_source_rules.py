"""House rules for the kernel sources (see ../shared/README.md, "Kernel conventions").

- Cython compiler directives are set in setup.py only, so that FASTNN_DEBUG=1 can turn bounds and
  wraparound checks back on: no ``# cython:`` header lines, no ``@cython.boundscheck`` (etc.)
  decorators and no ``with cython.boundscheck(...)`` blocks in src_cython/*.pyx / *.pxd.
- No ``-march=native`` (the wheel must run on any x86-64; simd.h dispatches at run time) and no
  ``-ffast-math`` / ``-Ofast`` (they set flush-to-zero for the whole Python process and break the
  float64 gradient checks), neither in setup.py's compiler flags nor in the C helpers.
"""
import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src_cython"
CYTHON_FILES = sorted(SRC.glob("*.pyx")) + sorted(SRC.glob("*.pxd"))
C_HEADERS = sorted(SRC.glob("*.h"))

DIRECTIVES = ("boundscheck", "wraparound", "initializedcheck", "cdivision", "nonecheck",
              "overflowcheck", "language_level")
# "#  cython: boundscheck=False" and variants with spaces; Cython reads them only in the header,
# but none belongs anywhere in a kernel file
HEADER_RE = re.compile(r"^\s*#\s*cython\s*:", re.IGNORECASE)
DECORATOR_RE = re.compile(r"^\s*@\s*cython\s*\.\s*(" + "|".join(DIRECTIVES) + r")\b")
WITH_RE = re.compile(r"^\s*with\s+.*\bcython\s*\.\s*(" + "|".join(DIRECTIVES) + r")\s*\(")
# distutils header lines may not smuggle in the forbidden flags either
FORBIDDEN_FLAG_RE = re.compile(r"-?march=native|-mtune=native|fast-math|-Ofast|"
                               r"unsafe-math-optimizations|-ffinite-math-only", re.IGNORECASE)


def test_there_are_kernel_sources():
    assert any(p.suffix == ".pyx" for p in CYTHON_FILES), f"no .pyx files in {SRC}"
    assert (ROOT / "setup.py").is_file()


@pytest.mark.parametrize("path", CYTHON_FILES, ids=lambda p: p.name)
def test_no_cython_directive_headers_or_decorators(path):
    problems = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if HEADER_RE.match(line):
            problems.append(f"{path.name}:{lineno}: '# cython:' header: {line.strip()}")
        if DECORATOR_RE.match(line):
            problems.append(f"{path.name}:{lineno}: directive decorator: {line.strip()}")
        if WITH_RE.match(line):
            problems.append(f"{path.name}:{lineno}: directive block: {line.strip()}")
        if line.lstrip().startswith("#") and "distutils" in line and FORBIDDEN_FLAG_RE.search(line):
            problems.append(f"{path.name}:{lineno}: forbidden flag in a distutils header: "
                            f"{line.strip()}")
    assert not problems, "directives belong in setup.py only:\n" + "\n".join(problems)


def _setup_py_code_strings():
    """String literals of setup.py that are code, i.e. not docstrings (the module docstring may
    say, in words, which flags are not used)."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            body = getattr(node, "body", [])
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                docstrings.add(id(body[0].value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and id(node) not in docstrings:
            yield node.lineno, node.value


def test_setup_py_has_no_native_or_fast_math_flags():
    bad = [f"setup.py:{lineno}: {value!r}" for lineno, value in _setup_py_code_strings()
           if FORBIDDEN_FLAG_RE.search(value)]
    assert not bad, "forbidden compiler flags in setup.py:\n" + "\n".join(bad)


def test_setup_py_sets_the_directives():
    """The other half of the rule: setup.py does set them (and ties them to FASTNN_DEBUG)."""
    text = (ROOT / "setup.py").read_text()
    for name in ("boundscheck", "wraparound"):
        assert re.search(rf"['\"]{name}['\"]\s*:", text), f"setup.py does not set {name}"
    assert "FASTNN_DEBUG" in text


def _strip_c_comments(text):
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.DOTALL)
    return re.sub(r"//[^\n]*", " ", text)


@pytest.mark.parametrize("path", C_HEADERS, ids=lambda p: p.name)
def test_c_helpers_do_not_turn_on_fast_math_or_native(path):
    """No ``#pragma GCC optimize("fast-math")``, ``__attribute__((optimize("Ofast")))``,
    ``target("arch=native")`` and the like in the C helpers (comments may mention them)."""
    code = _strip_c_comments(path.read_text())
    bad = [line.strip() for line in code.splitlines()
           if FORBIDDEN_FLAG_RE.search(line) or re.search(r"arch\s*=\s*native", line)]
    assert not bad, f"{path.name}: " + "; ".join(bad)
