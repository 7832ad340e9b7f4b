"""The wheels a lent GPU machine needs: forecast's dependencies, with everything they need in turn, less
what the device image already has (scripts/gpu-image-packages.txt, copied from the device tool's KINDS.md).

    python3 scripts/gpu_wheels.py            # name==version a line: the Makefile's GPU_WHEELS
    python3 scripts/gpu_wheels.py --why      # each with the chain that needs it

Versions are the ones installed in the Python that runs this (the project's venv: the lock's). Requirement
markers are evaluated for the image (CPython 3.12 on Linux x86_64), so a backport only older Pythons need
is left out. The dev tools (pytest, hypothesis) are not followed: the image has pytest, pytest-xdist and
hypothesis, which is all the gpu-marked tests need. Standard library only, plus `packaging`.
"""

from __future__ import annotations

import argparse
import re
from importlib import metadata
from pathlib import Path

import tomllib
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
IMAGE = ROOT / "scripts" / "gpu-image-packages.txt"
# The image's interpreter and platform, for requirement markers (KINDS.md: Python 3.12.3, x86-64 Linux)
TARGET = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
          "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
          "implementation_name": "cpython", "platform_python_implementation": "CPython"}


def canonical(name: str) -> str:
    """A distribution's name as PEP 503 compares it."""
    return re.sub(r"[-_.]+", "-", name).lower()


def image_packages(path: Path = IMAGE) -> dict[str, str | None]:
    """The image's packages: canonical name -> version (None where KINDS.md gives none)."""
    found: dict[str, str | None] = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            found[canonical(name)] = version or None
    return found


def project_requirements(pyproject: Path = ROOT / "pyproject.toml") -> list[Requirement]:
    """pyproject.toml's runtime dependencies (not the dev extra)."""
    return [Requirement(r) for r in tomllib.loads(pyproject.read_text())["project"]["dependencies"]]


def applies(req: Requirement, extras: set[str]) -> bool:
    """Whether a requirement holds on the image, for a distribution asked for with `extras`."""
    if req.marker is None:
        return True
    return any(req.marker.evaluate({**TARGET, "extra": e}) for e in (extras or {""}))


def closure(roots: list[Requirement]) -> dict[str, tuple[str, list[str]]]:
    """Every distribution `roots` need on the image, as installed here: canonical name ->
    (name==version, the chain of names that needs it)."""
    found: dict[str, tuple[str, list[str]]] = {}
    todo = [(r, set(r.extras), []) for r in roots]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        req, extras, chain = todo.pop(0)
        key = (canonical(req.name), frozenset(extras))
        if key in seen:
            continue
        seen.add(key)
        dist = metadata.distribution(req.name)
        name = canonical(dist.metadata["Name"])
        found.setdefault(name, (f"{dist.metadata['Name']}=={dist.version}", [*chain, name]))
        for text in dist.requires or []:
            sub = Requirement(text)
            if applies(sub, extras):
                todo.append((sub, set(sub.extras), [*chain, name]))
    return found


def wheels(image: dict[str, str | None] | None = None) -> list[tuple[str, list[str]]]:
    """What the image lacks of forecast's closure: (name==version, chain), sorted by name.
    The image keeps what it has (its torch, numpy, lightning), whatever version ours is."""
    image = image_packages() if image is None else image
    needed = closure(project_requirements())
    return sorted((pin, chain) for name, (pin, chain) in needed.items() if name not in image)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--why", action="store_true", help="print the chain of dependencies that needs each")
    args = parser.parse_args(argv)
    for pin, chain in wheels():
        print(f"{pin:32} {' <- '.join(reversed(chain))}" if args.why else pin)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
