"""House rules for the kernel sources (see ../shared/README.md, "Kernel conventions").

- Cython compiler directives are set in setup.py only, so that FASTNN_DEBUG=1 can turn bounds and
  wraparound checks back on: no ``# cython:`` header lines, no ``@cython.boundscheck`` (etc.)
  decorators and no ``with cython.boundscheck(...)`` blocks in src_cython/*.pyx / *.pxd.
- No ``-march=native`` (the wheel must run on any x86-64; simd.h dispatches at run time) and no
  ``-ffast-math`` / ``-Ofast`` (they set flush-to-zero for the whole Python process and break the
  float64 gradient checks), neither in setup.py's compiler flags nor in the C helpers.
"""
import ast
import importlib
import importlib.util
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


# ---- type stubs of the compiled modules ----------------------------------------------------------
# mypy reads fastnn/_<name>.pyi instead of the extension built from src_cython/<name>.pyx (which a
# fresh clone does not have), so each stub must name what its module defines. The stubs are looked
# up beside the fastnn that is imported (the checkout, or the installed wheel, which ships them).

PACKAGE = Path(importlib.util.find_spec("fastnn").submodule_search_locations[0])
PYX_FILES = sorted(SRC.glob("*.pyx"))
PYX_DEF_RE = re.compile(r"^def (\w+)", re.MULTILINE)
PYX_GLOBAL_RE = re.compile(r"^([A-Za-z_]\w*)\s*=", re.MULTILINE)  # module-level Python objects
PYX_ENUM_RE = re.compile(r"^\s*cpdef enum (\w+):\n((?:[ \t]+\w+[^\n]*\n)+)", re.MULTILINE)


def _stub_of(pyx):
    """src_cython/dense.pyx -> fastnn/_dense.pyi; src_cython/_threads.pyx -> fastnn/_threads.pyi
    (the module names of setup.py)."""
    return PACKAGE / ("_" + pyx.stem.lstrip("_") + ".pyi")


def _stub_names(stub):
    """Top-level functions, classes (with the names assigned in their bodies) and variables."""
    tree = ast.parse(stub.read_text(), filename=str(stub))
    functions, classes, variables = set(), {}, set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            functions.add(node.name)
        elif isinstance(node, ast.ClassDef):
            classes[node.name] = {t.id for n in node.body if isinstance(n, ast.Assign)
                                  for t in n.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            variables.add(node.target.id)
        elif isinstance(node, ast.Assign):
            variables.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return functions, classes, variables


def test_there_are_stubs_for_the_kernels():
    assert PYX_FILES and all(_stub_of(p).is_file() for p in PYX_FILES)


@pytest.mark.parametrize("pyx", PYX_FILES, ids=lambda p: p.name)
def test_stub_names_every_def_of_its_module(pyx):
    stub = _stub_of(pyx)
    assert stub.is_file(), f"{pyx.name} has no type stub {stub}"
    source = pyx.read_text()
    functions, classes, variables = _stub_names(stub)
    defs = set(PYX_DEF_RE.findall(source))
    assert functions == defs, (f"{stub.name} and {pyx.name} differ: missing from the stub "
                               f"{sorted(defs - functions)}, not in the module "
                               f"{sorted(functions - defs)}")
    missing = set(PYX_GLOBAL_RE.findall(source)) - variables
    assert not missing, f"{stub.name} does not declare the module-level objects {sorted(missing)}"
    for enum, body in PYX_ENUM_RE.findall(source):
        assert enum in classes, f"{stub.name} does not declare the cpdef enum {enum}"
        members = {line.split()[0] for line in body.splitlines() if line.strip()}
        assert classes[enum] == members, f"{stub.name}: {enum} members differ from {pyx.name}"


def test_no_stub_without_a_module():
    """Every fastnn/_*.pyi stands for a compiled module (or setup.py's generated _build_info)."""
    expected = {_stub_of(p).name for p in PYX_FILES} | {"_build_info.pyi"}
    stray = {p.name for p in PACKAGE.glob("*.pyi")} - expected
    assert not stray, f"stubs without a src_cython/*.pyx module: {sorted(stray)}"


@pytest.mark.parametrize("pyx", PYX_FILES, ids=lambda p: p.name)
def test_stub_names_what_the_built_module_has(pyx):
    """The same from the other side: the compiled module's public names (functions, the IntEnum
    of a cpdef enum, module-level objects) are those of its stub."""
    module = importlib.import_module("fastnn." + _stub_of(pyx).stem)
    functions, classes, variables = _stub_names(_stub_of(pyx))
    built = {n for n in dir(module) if not n.startswith("__")}
    assert built == functions | set(classes) | variables


def test_type_checkers_see_every_registered_class():
    """fastnn/__init__.py exports the registered layers, losses and optimizers at run time from
    the registries; its ``if TYPE_CHECKING:`` imports show them to type checkers and must name the
    same classes (``from fastnn import Dense`` would otherwise be an error under mypy)."""
    import fastnn

    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    seen = set()
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) \
                and node.test.id == "TYPE_CHECKING":
            seen |= {alias.asname or alias.name for imp in node.body
                     if isinstance(imp, ast.ImportFrom) for alias in imp.names}
    assert seen == set(fastnn._REGISTERED), (
        f"fastnn/__init__.py's TYPE_CHECKING imports differ from the registered classes: missing "
        f"{sorted(set(fastnn._REGISTERED) - seen)}, extra {sorted(seen - set(fastnn._REGISTERED))}")
