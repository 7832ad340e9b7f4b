"""The configs that ship inside the package: read them through `path`, copy them with `forecast configs`.

They are package data (importlib.resources), so an installed wheel has them as a source checkout does;
the checkout's top-level `configs/` is a link to this folder, so `--config configs/spy.yaml` works there.

    forecast configs                  # list the shipped configs
    forecast configs --copy my-configs   # copy them into a folder to edit
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from jsonargparse import ArgumentParser

from forecast.core.errors import ForecastError
from forecast.core.parsers import command_parser, parse

__all__ = ["main", "path", "shipped"]


def _root() -> Path:
    # A regular (wheel or editable) install keeps package data as files; a zipped install is not supported.
    return Path(str(resources.files(__name__)))


def path(name: str) -> Path:
    """The file of a shipped config, e.g. `path("trainer/default.yaml")`."""
    return _root() / name


def shipped() -> list[str]:
    """Relative names of every shipped config (`spy.yaml`, `model/patchtst_2b.yaml`, ...), sorted."""
    root = _root()
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.yaml"))


def copy_to(dest: Path) -> list[Path]:
    """Copy every shipped config under `dest` (as `dest/spy.yaml`, `dest/model/...`); refuses to overwrite.

    Raises:
        ForecastError: `dest` holds one of the files already, or cannot be written.
    """
    names = shipped()
    taken = [n for n in names if (dest / n).exists()]
    if taken:
        raise ForecastError(f"{dest / taken[0]} exists; choose an empty folder (nothing was copied)")
    written = []
    try:
        for name in names:
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + ".tmp")
            shutil.copyfile(path(name), tmp)
            tmp.replace(target)
            written.append(target)
    except OSError as err:
        for done in written:
            done.unlink(missing_ok=True)
        raise ForecastError(f"cannot copy the configs to {dest}: {err.strerror or err}") from None
    return written


def parser() -> ArgumentParser:
    """The `forecast configs` parser."""
    p = command_parser("forecast configs", "List the configs that ship with forecast, or copy them to edit.")
    p.add_argument("--copy", type=Path | None, default=None, metavar="DIR", help="copy every shipped config into DIR")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """`forecast configs`: list the shipped configs, or copy them into a folder to edit."""
    args = parse(parser(), list(argv or []))
    if args.copy is None:
        print(f"shipped configs ({_root()}):")
        for name in shipped():
            print(f"  {name}")
        return 0
    written = copy_to(args.copy)
    print(f"copied {len(written)} configs to {args.copy}: e.g. forecast fit --config {args.copy / 'demo.yaml'}")
    return 0
