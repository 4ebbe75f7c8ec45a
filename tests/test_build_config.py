"""The build: setup.py's compiler flags and probes, the recorded build flags, the packaging tools.

- fastnn/_build_info.py (written by setup.py) agrees with what the compiled extensions report,
  and show_config prints it.
- setup.py detects the compiler, adds -fopenmp (or -fopenmp-simd for FASTNN_NO_OPENMP=1), and
  stops with a clear message when OpenMP is missing (a fake compiler that refuses -fopenmp).
- MANIFEST.in / pyproject.toml: the sdist carries the Cython sources and no generated C; the
  cibuildwheel section covers CPython 3.10-3.13 and tests the installed wheel.
- tools/wheel_check.py and tools/repair_wheel.py on small synthetic archives.

The setup.py tests need setuptools, Cython and a C compiler; they are skipped where those are
absent (e.g. in the no-build-tools environment of tools/build_wheel.sh).
"""
import base64
import csv
import hashlib
import importlib.util
import io
import os
import re
import shutil
import stat
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import fastnn
from fastnn import _threads

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = re.compile(r"march=native|mtune=native|fast-math|Ofast", re.IGNORECASE)


def _build_info():
    try:
        from fastnn._build_info import BUILD_INFO
    except ImportError:
        pytest.skip("fastnn/_build_info.py absent: this copy was built before setup.py recorded "
                    "its flags (rebuild with pip install -e .)")
    return BUILD_INFO


def _load_module(path, name):
    if not Path(path).is_file():
        pytest.skip(f"{path} absent")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---- the recorded build flags ---------------------------------------------------------------

def test_build_info_matches_the_extensions():
    info = _build_info()
    assert info["openmp"] == _threads.openmp_enabled()
    args = info["extra_compile_args"] + info["extra_link_args"]
    assert not [a for a in args if FORBIDDEN.search(a)], args
    if info["compiler"] in ("gcc", "clang"):
        if info["openmp"]:
            assert "-fopenmp" in info["extra_compile_args"]
        else:
            # the serial build keeps '#pragma omp simd' working
            assert "-fopenmp-simd" in info["extra_compile_args"]
            assert "FASTNN_NO_OPENMP=1" in info["define_macros"]
    dispatch = info["simd_dispatch"].startswith("target_clones")
    assert dispatch == ("FNN_NO_CLONES=1" not in info["define_macros"])
    path = _threads.simd_path()
    if dispatch:
        assert path.startswith("x86-64"), path
    else:
        assert "no run-time dispatch" in path, path
    assert info["cython_directives"]["boundscheck"] == info["debug"]


def test_show_config_prints_the_build_flags():
    info = _build_info()
    buf = io.StringIO()
    fastnn.show_config(file=buf)
    lines = buf.getvalue().splitlines()
    flags = [line for line in lines if line.split()[0] == "build_flags"]
    assert flags, buf.getvalue()
    for arg in info["extra_compile_args"]:
        assert arg in flags[0]
    compiler = [line for line in lines if line.split()[0] == "build_compiler"]
    assert compiler and info["compiler"] in compiler[0]
    assert any(line.split()[0] == "build_simd_dispatch" for line in lines)


# ---- setup.py -------------------------------------------------------------------------------

@pytest.fixture
def setup_py(monkeypatch):
    """setup.py loaded as a module (its setup() call runs only as __main__)."""
    pytest.importorskip("setuptools")
    pytest.importorskip("Cython")
    monkeypatch.chdir(ROOT)
    for name in ("FASTNN_DEBUG", "FASTNN_NO_OPENMP", "FASTNN_NO_CLONES"):
        monkeypatch.delenv(name, raising=False)
    return _load_module(ROOT / "setup.py", "fastnn_setup_under_test")


@pytest.fixture
def c_compiler(setup_py):
    import setuptools  # noqa: F401  (provides distutils on Python >= 3.12)
    from distutils.ccompiler import new_compiler
    from distutils.sysconfig import customize_compiler

    compiler = new_compiler()
    customize_compiler(compiler)
    if compiler.compiler_type == "msvc":
        compiler.initialize()
    elif not shutil.which(compiler.compiler_so[0]):
        pytest.skip(f"no C compiler ({compiler.compiler_so[0]})")
    return compiler


def test_extension_names(setup_py):
    names = sorted(e.name for e in setup_py.extensions)
    pyx = sorted(ROOT.glob("src_cython/*.pyx"))
    assert len(names) == len(pyx) >= 5
    assert "fastnn._threads" in names and "fastnn._dense" in names
    assert setup_py._module_name("src_cython/losses.pyx") == "fastnn._losses"
    assert setup_py._module_name("src_cython/_threads.pyx") == "fastnn._threads"
    assert all(n.startswith("fastnn._") for n in names)


def test_directives_follow_fastnn_debug(monkeypatch):
    pytest.importorskip("Cython")
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("FASTNN_DEBUG", "1")
    debug = _load_module(ROOT / "setup.py", "fastnn_setup_debug")
    assert debug.directives["boundscheck"] and debug.directives["wraparound"]
    monkeypatch.setenv("FASTNN_DEBUG", "0")
    release = _load_module(ROOT / "setup.py", "fastnn_setup_release")
    assert not release.directives["boundscheck"] and not release.directives["wraparound"]


def test_configure_with_openmp(setup_py, c_compiler):
    cfg = setup_py.configure(c_compiler)
    assert cfg["compiler"] in ("gcc", "clang", "apple-clang", "msvc", "intel")
    assert cfg["openmp"] is True
    flags = setup_py._openmp_flags(cfg["compiler"])
    for f in flags[0]:
        assert f in cfg["extra_compile_args"]
    assert not [a for a in cfg["extra_compile_args"] if FORBIDDEN.search(a)]
    if cfg["compiler"] in ("gcc", "clang"):
        # lets gcc vectorise simd.h's exp loops below AVX-512; not fast-math
        assert "-fno-trapping-math" in cfg["extra_compile_args"]
        assert "-fno-math-errno" in cfg["extra_compile_args"]
    if cfg["compiler"] == "gcc" and setup_py.platform.machine() in ("x86_64", "AMD64"):
        assert cfg["simd_dispatch"].startswith("target_clones"), cfg["notes"]


def test_configure_serial_keeps_omp_simd(setup_py, c_compiler, monkeypatch):
    monkeypatch.setattr(setup_py, "NO_OPENMP", True)
    cfg = setup_py.configure(c_compiler)
    assert cfg["openmp"] is False
    assert ("FASTNN_NO_OPENMP", "1") in cfg["define_macros"]
    assert "-fopenmp" not in cfg["extra_compile_args"] + cfg["extra_link_args"]
    if cfg["compiler"] in ("gcc", "clang"):
        assert "-fopenmp-simd" in cfg["extra_compile_args"]


def test_configure_no_clones(setup_py, c_compiler, monkeypatch):
    monkeypatch.setattr(setup_py, "NO_CLONES", True)
    cfg = setup_py.configure(c_compiler)
    assert ("FNN_NO_CLONES", "1") in cfg["define_macros"]
    assert cfg["simd_dispatch"].startswith("none")


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX shell wrapper")
def test_missing_openmp_stops_the_build_with_a_clear_message(setup_py, c_compiler, tmp_path,
                                                             capsys):
    real = shutil.which(c_compiler.compiler_so[0])
    fake = tmp_path / "cc-without-openmp"
    fake.write_text("#!/bin/sh\n"
                    'for a in "$@"; do case "$a" in *openmp*) '
                    "echo \"cc: error: unsupported option '$a'\" >&2; exit 1;; esac; done\n"
                    f'exec "{real}" "$@"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    c_compiler.set_executables(compiler_so=[str(fake)] + c_compiler.compiler_so[1:],
                               linker_so=[str(fake)] + c_compiler.linker_so[1:])
    with pytest.raises(SystemExit) as excinfo:
        setup_py.configure(c_compiler)
    assert "FASTNN_NO_OPENMP=1" in str(excinfo.value)
    err = capsys.readouterr().err
    assert "OpenMP is not available" in err
    assert "FASTNN_NO_OPENMP=1" in err and "unsupported option" in err
    # and the serial build goes through with the same compiler
    setup_py.NO_OPENMP = True
    try:
        cfg = setup_py.configure(c_compiler)
    finally:
        setup_py.NO_OPENMP = False
    assert cfg["openmp"] is False


def test_compiler_kind_detects_gcc_and_clang(setup_py, c_compiler):
    kind = setup_py._compiler_kind(c_compiler)
    assert kind in ("gcc", "clang", "apple-clang", "msvc", "intel")
    clang = shutil.which("clang")
    if c_compiler.compiler_type != "unix" or not clang:
        return
    c_compiler.set_executables(compiler_so=[clang] + c_compiler.compiler_so[1:])
    assert setup_py._compiler_kind(c_compiler) in ("clang", "apple-clang")


# ---- packaging metadata -----------------------------------------------------------------------

def test_manifest_ships_sources_not_generated_c():
    path = ROOT / "MANIFEST.in"
    if not path.is_file():
        pytest.skip("MANIFEST.in absent (installed-package test run)")
    lines = [line.split("#")[0].split() for line in path.read_text().splitlines()]
    lines = [line for line in lines if line]
    inc = [line for line in lines if line[:2] == ["recursive-include", "src_cython"]]
    assert inc and {"*.pyx", "*.pxd", "*.h"} <= set(inc[0][2:])
    excluded = {p for line in lines if line[0] == "global-exclude" for p in line[1:]}
    assert {"*.c", "*.so"} <= excluded
    assert ["exclude", "fastnn/_build_info.py"] in lines


def test_cibuildwheel_config():
    tomllib = pytest.importorskip("tomllib")
    path = ROOT / "pyproject.toml"
    if not path.is_file():
        pytest.skip("pyproject.toml absent")
    cfg = tomllib.loads(path.read_text())
    cibw = cfg["tool"]["cibuildwheel"]
    assert set(cibw["build"].split()) == {"cp310-*", "cp311-*", "cp312-*", "cp313-*"}
    assert "run_installed_tests.py" in cibw["test-command"]
    assert cibw["test-extras"] == ["test"]
    assert set(cibw["linux"]["archs"]) == {"x86_64", "aarch64"}
    assert "repair_wheel.py" in cibw["linux"]["repair-wheel-command"]
    assert "libomp" in cibw["macos"]["before-all"]
    assert "delvewheel" in cibw["windows"]["repair-wheel-command"]
    assert any("scipy" in r for r in cfg["build-system"]["requires"])


# ---- tools/ -------------------------------------------------------------------------------------

def _tools(name):
    return _load_module(ROOT / "tools" / f"{name}.py", f"fastnn_tools_{name}")


def _make_wheel(path, files):
    record = "fastnn-0.1.0.dist-info/RECORD"
    with zipfile.ZipFile(path, "w") as z:
        rows = []
        for name, data in files.items():
            z.writestr(name, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            rows.append(f"{name},sha256={digest.decode()},{len(data)}")
        z.writestr(record, "\n".join(rows + [f"{record},,"]) + "\n")


def test_repair_wheel_adds_files_to_the_record(tmp_path):
    repair = _tools("repair_wheel")
    wheel = tmp_path / "fastnn-0.1.0-cp311-cp311-manylinux_2_28_x86_64.whl"
    _make_wheel(wheel, {"fastnn/__init__.py": b"x = 1\n",
                        "fastnn.libs/libgomp-abc.so.1.0.0": b"\x7fELF"})
    repair.add_files(wheel, {"fastnn.libs/LICENSE-libgomp.txt": b"GCC RUNTIME LIBRARY EXCEPTION"})
    with zipfile.ZipFile(wheel) as z:
        assert z.testzip() is None
        rows = list(csv.reader(io.StringIO(z.read("fastnn-0.1.0.dist-info/RECORD").decode())))
        by_name = {r[0]: r for r in rows}
        for name in z.namelist():
            assert name in by_name, name
            if not name.endswith("RECORD"):
                data = z.read(name)
                digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
                assert by_name[name][1] == "sha256=" + digest.decode()
                assert by_name[name][2] == str(len(data))
        assert z.namelist()[-1].endswith("RECORD")
    licence = ROOT / "tools" / "licenses" / "LICENSE-libgomp.txt"
    text = licence.read_text()
    assert "GCC RUNTIME LIBRARY EXCEPTION" in text and "GNU GENERAL PUBLIC LICENSE" in text


def test_wheel_check_finds_problems(tmp_path):
    check = _tools("wheel_check")
    modules = {f"fastnn/{'_' + p.stem.lstrip('_')}.cpython-311-x86_64-linux-gnu.so": b""
               for p in ROOT.glob("src_cython/*.pyx")}
    stubs = {f"fastnn/{'_' + p.stem.lstrip('_')}.pyi": b"" for p in ROOT.glob("src_cython/*.pyx")}
    good = {"fastnn/__init__.py": b"", "fastnn/_build_info.py": b"",
            "fastnn/layers/__init__.py": b"", **modules, **stubs, "fastnn/py.typed": b"",
            "fastnn.libs/libgomp-abc.so.1.0.0": b"", "fastnn.libs/LICENSE-libgomp.txt": b""}
    wheel = tmp_path / "fastnn-0.1.0-cp311-cp311-manylinux_2_28_x86_64.whl"
    _make_wheel(wheel, good)
    assert check.check_wheel(wheel, repaired=True)[0] == []
    bad = dict(good)
    del bad["fastnn.libs/LICENSE-libgomp.txt"]
    del bad["fastnn/_build_info.py"]
    del bad["fastnn/py.typed"]
    bad["fastnn/dense.c"] = b""
    _make_wheel(wheel, bad)
    problems = " | ".join(check.check_wheel(wheel, repaired=True)[0])
    assert "LICENSE-libgomp" in problems and "_build_info" in problems and "dense.c" in problems
    assert "py.typed" in problems


def test_wheel_check_sdist(tmp_path):
    check = _tools("wheel_check")
    names = ["setup.py", "pyproject.toml", "MANIFEST.in", "README.md", "PKG-INFO",
             "tests/test_x.py"]
    names += [f"src_cython/{p.name}" for pat in ("*.pyx", "*.pxd", "*.h")
              for p in ROOT.glob(f"src_cython/{pat}")]
    names += ["fastnn/py.typed"] + [f"fastnn/{'_' + p.stem.lstrip('_')}.pyi"
                                    for p in ROOT.glob("src_cython/*.pyx")]
    sdist = tmp_path / "fastnn-0.1.0.tar.gz"

    def make(extra=()):
        with tarfile.open(sdist, "w:gz") as tar:
            for name in list(names) + list(extra):
                data = b"x"
                info = tarfile.TarInfo(f"fastnn-0.1.0/{name}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))

    make()
    assert check.check_sdist(sdist)[0] == []
    make(["src_cython/dense.c", "fastnn/_build_info.py"])
    problems = " | ".join(check.check_sdist(sdist)[0])
    assert "dense.c" in problems and "_build_info" in problems
    names.remove("fastnn/_dense.pyi")
    make()
    assert check.check_sdist(sdist)[0] == ["missing fastnn/_dense.pyi"]


def test_run_installed_tests_copies_no_package(tmp_path):
    runner = _tools("run_installed_tests")
    runner.copy_tests(ROOT, tmp_path)
    assert (tmp_path / "tests" / Path(__file__).name).is_file()
    assert not (tmp_path / "fastnn").exists()
    assert not list(tmp_path.rglob("*.so")) and not list(tmp_path.rglob("*.c"))
    assert os.path.isfile(tmp_path / "setup.py")
