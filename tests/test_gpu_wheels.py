"""The wheels a GPU image lacks (`GPU_WHEELS` in the Makefile) are complete: pip's own resolver, offline,
resolves them for CPython 3.12 on manylinux x86_64 against the image's packages (scripts/gpu-image-packages.txt,
from the device tool's KINDS.md), so a dependency nobody listed fails here, not on a lent GPU machine with no
network. (tests/test_gpu_lease.py checks that GPU_WHEELS is what scripts/gpu_wheels.py computes.)

The wheels come from `make gpu-wheels` into the ignored `.whl/` (the same folder the GPU machine gets),
downloaded once by this test where they are missing (CI reaches PyPI); on a machine that cannot download
them the test skips and says why. The image's packages are given to the resolver as metadata-only wheels
without dependencies: they are present there, whatever they need themselves is the image's business. Their
versions are KINDS.md's where it gives one (torch 2.11.0, numpy 2.5.2, ...), else this venv's (the lock's).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WHEELS = ROOT / ".whl"
TARGET = ["--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp",
          "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_27_x86_64",
          "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64",
          "--platform", "manylinux1_x86_64"]


def makefile_list(name: str) -> list[str]:
    """A `NAME ?= a b \\ c` list of the Makefile."""
    text = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    found = re.search(rf"^{name}\s*\?=(.*)$", text, re.MULTILINE)
    assert found, f"{name} not in the Makefile"
    return found.group(1).split()


def project_dependencies() -> list[str]:
    """pyproject.toml's dependencies: what `forecast` needs, wherever it runs."""
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]


def image_packages() -> list[str]:
    """`name==version` of every image package this venv also has (what forecast can need of the image)."""
    from importlib import metadata

    pins = []
    for line in (ROOT / "scripts" / "gpu-image-packages.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line:
            continue
        name, _, version = line.partition("==")
        try:
            pins.append(f"{name}=={version or metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue  # nothing of ours needs it
    return pins


def stub_wheel(folder: Path, pin: str) -> None:
    """A wheel holding only the metadata of `name==version` (no code, no dependencies)."""
    name, version = pin.split("==")
    dist = f"{re.sub(r'[-_.]+', '_', name)}-{version}"
    with zipfile.ZipFile(folder / f"{dist}-py3-none-any.whl", "w") as whl:
        whl.writestr(f"{dist}.dist-info/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        whl.writestr(f"{dist}.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                                "Tag: py3-none-any\n")
        whl.writestr(f"{dist}.dist-info/RECORD", "")


def canonical(name: str) -> str:
    """A distribution's name as PEP 503 compares it."""
    return re.sub(r"[-_.]+", "-", name).lower()


def have_wheels(pins: list[str]) -> bool:
    names = {canonical(p.name.split("-")[0]) for p in WHEELS.glob("*.whl")} if WHEELS.is_dir() else set()
    return all(canonical(pin.split("==")[0]) in names for pin in pins)


@pytest.fixture(scope="module")
def gpu_wheels() -> list[str]:
    pins = makefile_list("GPU_WHEELS")
    if not have_wheels(pins):
        done = subprocess.run(["make", "-s", "gpu-wheels", f"PYTHON={sys.executable}"], cwd=ROOT, capture_output=True,
                              text=True, timeout=600)
        if done.returncode != 0 or not have_wheels(pins):
            pytest.skip(f"cannot download GPU_WHEELS into {WHEELS} (offline?): "
                        f"{(done.stderr.strip().splitlines() or ['?'])[-1]}")
    return pins


def resolve(pins: list[str], stubs: Path, wheels: Path, tmp: Path) -> subprocess.CompletedProcess:
    """pip's resolver, offline: `pins` and the project's dependencies from `wheels` and the image's stubs only."""
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_NO_INPUT": "1"}  # no index from a config file
    return subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--no-index",
                           "--find-links", str(wheels), "--find-links", str(stubs), *TARGET,
                           "--target", str(tmp / "site"), "--report", str(tmp / "report.json"), *pins,
                           *project_dependencies()],
                          capture_output=True, text=True, timeout=300, env=env)


@pytest.fixture(scope="module")
def stubs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("image")
    for pin in image_packages():
        stub_wheel(folder, pin)
    return folder


def test_gpu_wheels_resolve_offline_against_the_image(gpu_wheels, stubs, tmp_path):
    done = resolve(gpu_wheels, stubs, WHEELS, tmp_path)
    assert done.returncode == 0, done.stderr.strip().splitlines()[-3:]
    chosen = {canonical(i["metadata"]["name"]): i["metadata"]["version"]
              for i in json.loads((tmp_path / "report.json").read_text())["install"]}
    # every pin is what gets installed, and nothing comes from outside GPU_WHEELS or the image
    for pin in gpu_wheels:
        name, version = pin.split("==")
        assert chosen[canonical(name)] == version
    image = {canonical(p.split("==")[0]) for p in image_packages()}
    listed = {canonical(p.split("==")[0]) for p in gpu_wheels}
    assert set(chosen) <= image | listed


@pytest.mark.parametrize("dropped", ["mako", "psycopg"])
def test_a_missing_dependency_fails_the_resolution(gpu_wheels, stubs, tmp_path, dropped):
    """What the test above would say had a dependency been left out (optuna's alembic's, and PostgreSQL's)."""
    only = tmp_path / "wheels"
    only.mkdir()
    for whl in WHEELS.glob("*.whl"):
        if canonical(whl.name.split("-")[0]) != dropped:
            (only / whl.name).symlink_to(whl)
    kept = [p for p in gpu_wheels if canonical(p.split("==")[0]) != dropped]
    done = resolve(kept, stubs, only, tmp_path)
    assert done.returncode != 0 and dropped in done.stderr.lower()


def test_the_wheels_and_the_tree_fit_the_devices_carry(gpu_wheels):
    """What travels to the device (tracked and untracked files, plus the carried .whl/) stays under 64 MiB."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    tree = sum((ROOT / f).stat().st_size for f in files if f and (ROOT / f).is_file())
    wheels = sum(w.stat().st_size for w in WHEELS.glob("*.whl"))
    # exactly GPU_WHEELS: a stale wheel would be installed over the image's package, and two versions of one
    # stop the install (remove .whl/ and run `make gpu-wheels`)
    assert len(list(WHEELS.glob("*.whl"))) == len(gpu_wheels), sorted(w.name for w in WHEELS.glob("*.whl"))
    assert tree + wheels < 64 * 2**20, (tree, wheels)
