"""scripts/build_lambda_zip.py without pip: requirements, stripping, compiling and the deterministic zip."""

from __future__ import annotations

import importlib.util
import os
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def build() -> ModuleType:
    """Import the build script from its path (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("build_lambda_zip", ROOT / "scripts" / "build_lambda_zip.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tree(root: Path, mtime: float) -> Path:
    files = {
        "pkg/__init__.py": "X = 1\n",
        "pkg/mod.py": "def f():\n    return 2\n",
        "pkg/_speedups.cpython-311-x86_64-linux-gnu.so": "\x7fELF",
        "pkg/__pycache__/mod.cpython-311.pyc": "stale",
        "pkg/tests/test_mod.py": "assert True\n",
        "pkg/data/tests.txt": "a file named like the dir is kept",
        "stray.pyc": "stale",
        "bin/tool": "#!/build/machine/python\n",
        "pkg-1.0.dist-info/METADATA": "Name: pkg\n",
    }
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        os.utime(path, (mtime, mtime))
    return root


def test_requirements_come_from_pyproject_without_cli_only_ones(build: ModuleType) -> None:
    """The project's runtime dependencies, less rich and click; aiobotocore stays (it pins the botocore shipped)."""
    reqs = build.runtime_requirements(ROOT / "pyproject.toml")
    names = {build.requirement_name(r) for r in reqs}
    assert "rich" not in names
    assert "click" not in names
    assert "boto3" not in names  # only the dev package (DynamoDB Local, moto, the demo) uses boto3
    assert {"aiobotocore", "pydantic", "pydantic-settings", "structlog", "prometheus-client"} <= names
    assert build.requirement_name("PyYAML>=6.0,<7") == "pyyaml"
    assert build.requirement_name("moto[server]>=5") == "moto"


def test_the_package_copy_leaves_out_the_cli(build: ModuleType, tmp_path: Path) -> None:
    """replicator/cli (click) is not copied; a deeper folder of the same name and every other module are."""
    source = tmp_path / "src"
    for name in ("__init__.py", "cli/__init__.py", "cli/main.py", "runtime/cli/x.py", "runtime/__pycache__/a.pyc"):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_text("")
    build.copy_package(source, tmp_path / "out")
    copied = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert copied == ["__init__.py", "runtime/cli/x.py"]


def test_pins_are_this_interpreters_versions(build: ModuleType) -> None:
    """Constraints pin the tested versions and never the project itself or the installers."""
    pins = dict(p.split("==") for p in build.installed_pins())
    import aiobotocore  # noqa: PLC0415 - only to read its version

    assert pins["aiobotocore"] == aiobotocore.__version__
    assert "replicator" not in pins
    assert "pip" not in pins


def test_strip_removes_caches_tests_and_scripts(build: ModuleType, tmp_path: Path) -> None:
    """__pycache__, pycs, tests/ directories and bin/ go; data files and dist-info stay."""
    root = _tree(tmp_path / "t", 1_000_000)
    build.strip_tree(root)
    left = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert left == [
        "pkg-1.0.dist-info/METADATA",
        "pkg/__init__.py",
        "pkg/_speedups.cpython-311-x86_64-linux-gnu.so",
        "pkg/data/tests.txt",
        "pkg/mod.py",
    ]


def test_zip_is_byte_identical_whatever_the_mtimes_and_order(build: ModuleType, tmp_path: Path) -> None:
    """Two trees with the same contents but other timestamps zip to the same bytes, entries sorted."""
    outputs = []
    for n, mtime in enumerate((1_000_000, 1_700_000_000)):
        root = _tree(tmp_path / f"t{n}", mtime)
        build.strip_tree(root)
        build.compile_tree(root)
        output = tmp_path / f"out{n}.zip"
        build.write_zip(root, output)
        outputs.append(output)
    assert outputs[0].read_bytes() == outputs[1].read_bytes()
    with zipfile.ZipFile(outputs[0]) as archive:
        infos = archive.infolist()
    names = [i.filename for i in infos]
    assert names == sorted(names)
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
    modes = {i.filename: (i.external_attr >> 16) & 0o777 for i in infos}
    assert modes["pkg/_speedups.cpython-311-x86_64-linux-gnu.so"] == 0o755
    assert modes["pkg/mod.py"] == 0o644


def test_compiled_pycs_are_unchecked_hash_and_name_var_task(build: ModuleType, tmp_path: Path) -> None:
    """Pycs carry no timestamp (flags: hash-based, unchecked) and point tracebacks at /var/task."""
    root = _tree(tmp_path / "t", 1_000_000)
    build.strip_tree(root)
    build.compile_tree(root)
    pyc = root / "pkg" / "__pycache__" / "mod.cpython-311.pyc"
    data = pyc.read_bytes()
    assert int.from_bytes(data[4:8], "little") == 0b01
    assert b"/var/task/pkg/mod.py" in data
    assert str(tmp_path).encode() not in data
