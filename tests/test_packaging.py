"""The sdist and wheel ship what a project needs, and nothing from tests/demo/docs."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile

import pytest

from tests.conftest import ROOT

REQUIRED_IN_BOTH = [
    "async_image_save/__init__.py",
    "async_image_save/py.typed",
    "async_image_save/migrations/0001_initial.py",
    "async_image_save/static/async_image_save/placeholder.svg",
]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--no-isolation",
            "--sdist",
            "--wheel",
            "--outdir",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    sdist = next(out.glob("*.tar.gz"))
    wheel = next(out.glob("*.whl"))
    with tarfile.open(sdist) as tar:
        sdist_names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    with zipfile.ZipFile(wheel) as zf:
        wheel_names = set(zf.namelist())
    return sdist, wheel, sdist_names, wheel_names


def test_wheel_ships_package_data(built):
    _sdist, _wheel, _sdist_names, wheel_names = built
    missing = [name for name in REQUIRED_IN_BOTH if name not in wheel_names]
    assert not missing, f"missing from the wheel: {missing}"
    templates = [n for n in wheel_names if n.startswith("async_image_save/templates/")]
    assert templates, "templates are not in the wheel"
    assert not [n for n in wheel_names if n.startswith(("tests/", "demo/", "docs/", "benchmarks/"))]


def test_sdist_ships_docs_files_and_package_data(built):
    _sdist, _wheel, sdist_names, _wheel_names = built
    for name in REQUIRED_IN_BOTH + ["README.rst", "CHANGELOG.rst", "LICENSE", "setup.py"]:
        assert name in sdist_names, f"{name} is missing from the sdist"
    assert not [n for n in sdist_names if n.startswith(("demo/", "tests/"))]


def test_twine_check_passes(built):
    sdist, wheel, _s, _w = built
    result = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(sdist), str(wheel)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
