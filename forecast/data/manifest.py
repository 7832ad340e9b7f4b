"""Manifests: one JSON file per data folder recording what each parquet file should be.

`raw/manifest.json` and `processed/manifest.json` map a file's path (relative to the data
directory, e.g. `raw/SPY.parquet`) to its entry: symbol, path, md5, rows, first/last date,
columns, source, created_at, plus what the writer adds (processed entries: tier, tier
version and the md5 of every source file). `verify` re-checks all of it; `read_verified` is how
every parquet file is read: its bytes must match their entry before they are parsed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import pyarrow.parquet as pq

from forecast.core.errors import ForecastError
from forecast.core.files import atomic_path, md5_file, write_json_atomic
from forecast.data.paths import PROCESSED_MANIFEST, RAW_MANIFEST, raw_path, relative

Kind = Literal["raw", "processed"]
FORMAT = 1
_FILES = {"raw": RAW_MANIFEST, "processed": PROCESSED_MANIFEST}


def manifest_path(data_dir: str | os.PathLike, kind: Kind) -> Path:
    """`<data_dir>/raw/manifest.json` or `<data_dir>/processed/manifest.json`."""
    return Path(data_dir) / _FILES[kind]


def load_manifest(data_dir: str | os.PathLike, kind: Kind) -> dict[str, dict[str, Any]]:
    """The entries of one manifest, keyed by relative path; {} when there is none yet.

    Raises:
        ForecastError: when the manifest exists but is not a manifest (bad JSON, wrong shape).
    """
    path = manifest_path(data_dir, kind)
    if not path.exists():
        return {}
    try:
        doc = json.loads(path.read_text())
        files = doc["files"]
        if not isinstance(files, dict):
            raise TypeError("'files' is not an object")
        for key, entry in files.items():
            _check_entry(key, entry)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ForecastError(f"{path}: not a readable manifest ({err}); fix or delete it") from None
    return files


# The fields every entry holds, and those of a built tier (an entry with `tier`; a raw entry has `source`).
_ENTRY_FIELDS: dict[str, type | tuple[type, ...]] = {
    "path": str, "md5": str, "rows": int, "first": (str, type(None)), "last": (str, type(None)), "columns": list}
_TIER_FIELDS: dict[str, type | tuple[type, ...]] = {"tier": str, "tier_version": int, "sources": dict}


def _check_entry(key: str, entry: Any) -> None:
    """One entry against the manifest's schema (a peer or a hand edit may have broken it).

    Raises:
        TypeError: a field is missing or of the wrong type, or the entry is filed under another path.
    """
    if not isinstance(entry, dict):
        raise TypeError(f"entry {key!r} is not an object")
    fields = {**_ENTRY_FIELDS, **(_TIER_FIELDS if "tier" in entry else {"source": str})}
    for name, kind in fields.items():
        value = entry.get(name, ...)
        if value is ... or not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise TypeError(f"entry {key!r}: {'no' if value is ... else 'a malformed'} field {name!r}")
    if entry["path"] != key or entry["rows"] < 0 or not all(isinstance(c, str) for c in entry["columns"]):
        raise TypeError(f"entry {key!r}: its path, rows or columns are malformed")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in entry.get("sources", {}).items()):
        raise TypeError(f"entry {key!r}: a malformed field 'sources'")


@contextlib.contextmanager
def manifest_lock(data_dir: str | os.PathLike, kind: Kind) -> Iterator[None]:
    """Hold the `kind` manifest exclusively (an flock on `<kind>/.manifest.lock`) between a read
    and its rewrite, so two `forecast data` processes never drop each other's entries."""
    lock = manifest_path(data_dir, kind).with_name(".manifest.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def manifest_json(entries: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The document written to disk for `entries`."""
    return {"format": FORMAT, "files": entries}


def write_manifest(
    data_dir: str | os.PathLike, kind: Kind, entries: dict[str, dict[str, Any]]
) -> None:
    """Replace a manifest atomically (temporary file, then rename)."""
    write_json_atomic(manifest_path(data_dir, kind), manifest_json(entries))


def file_entry(
    data_dir: str | os.PathLike,
    path: str | os.PathLike,
    frame: pd.DataFrame,
    md5: str,
    **extra: Any,
) -> dict[str, Any]:
    """A manifest entry for the parquet file `path` holding `frame` (with a Date column).

    Args:
        data_dir: the data directory; the entry's path is relative to it.
        path: where the file lives (or is about to be renamed to).
        frame: the frame that was written, for rows, dates and columns.
        md5: the md5 of the bytes written.
        **extra: fields the writer adds (symbol, source, tier, ...).
    """
    dates = frame["Date"]
    entry = {
        "path": relative(data_dir, path),
        "md5": md5,
        "rows": int(len(frame)),
        "first": dates.iloc[0].date().isoformat() if len(frame) else None,
        "last": dates.iloc[-1].date().isoformat() if len(frame) else None,
        "columns": [str(c) for c in frame.columns],
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    entry.update(extra)
    return entry


@dataclass
class Check:
    """The verdict on one manifest entry (or on a file no manifest knows)."""

    path: str
    rows: int | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _check_file(data_dir: Path, key: str, entry: dict[str, Any]) -> Check:
    check = Check(path=key, rows=entry.get("rows"))
    path = data_dir / key
    if not path.is_file():
        check.problems.append("file is missing")
        return check
    md5 = md5_file(path)
    if md5 != entry.get("md5"):
        check.problems.append(f"md5 {md5} != manifest {entry.get('md5')}")
    try:
        meta = pq.read_metadata(path)
        columns, rows = list(meta.schema.to_arrow_schema().names), meta.num_rows
    except Exception as err:  # any damage to a parquet file surfaces here; report, don't crash
        check.problems.append(f"not a readable parquet file ({type(err).__name__})")
        return check
    if columns != entry.get("columns"):
        check.problems.append(f"columns {columns} != manifest {entry.get('columns')}")
    if rows != entry.get("rows"):
        check.problems.append(f"{rows} rows != manifest {entry.get('rows')}")
    return check


def _check_sources(data_dir: Path, check: Check, entry: dict[str, Any]) -> None:
    """A processed file is stale when a raw file it was built from has changed since."""
    for symbol, md5 in (entry.get("sources") or {}).items():
        src = raw_path(data_dir, symbol)
        if not src.is_file():
            check.problems.append(f"source {relative(data_dir, src)} is missing")
        elif md5_file(src) != md5:
            check.problems.append(f"source {symbol} changed since the build (rebuild it)")


def verify(data_dir: str | os.PathLike) -> list[Check]:
    """Check every manifest entry's file (exists, md5, columns, rows) and find untracked files.

    Raises:
        ForecastError: when the directory has no manifest at all (nothing to verify).
    """
    data_dir = Path(data_dir)
    if not any(manifest_path(data_dir, kind).exists() for kind in _FILES):
        raise ForecastError(
            f"no manifest under {data_dir} (nothing to verify); "
            "run `forecast data sample`, `download` or `import` first"
        )
    checks: list[Check] = []
    for kind in _FILES:
        try:
            entries = load_manifest(data_dir, kind)
        except ForecastError as err:
            checks.append(Check(path=_FILES[kind], problems=[str(err)]))
            continue
        for key, entry in sorted(entries.items()):
            check = _check_file(data_dir, key, entry)
            if kind == "processed":
                _check_sources(data_dir, check, entry)
            checks.append(check)
        known = set(entries)
        for path in sorted((data_dir / kind).glob("*.parquet")):
            if relative(data_dir, path) not in known:
                checks.append(
                    Check(path=relative(data_dir, path), problems=["not in the manifest"])
                )
    return checks


def write_tracked(
    data_dir: str | os.PathLike,
    kind: Kind,
    path: str | os.PathLike,
    frame: pd.DataFrame,
    **extra: Any,
) -> dict[str, Any]:
    """Write `frame` to the parquet file `path` and record it in the `kind` manifest.

    Both go through temporary files renamed into place only once everything has succeeded,
    so a failure leaves the old file and the old manifest as they were; the manifest is locked
    from read to rewrite, so concurrent writers keep each other's entries.

    Args:
        data_dir: the data directory.
        kind: which manifest records the file.
        path: the parquet file's final place under `data_dir/kind/`.
        frame: the frame to write (its index is not stored).
        **extra: fields for the entry (see `file_entry`).

    Returns:
        The manifest entry written.
    """
    with manifest_lock(data_dir, kind):
        entries = load_manifest(data_dir, kind)  # a damaged manifest stops us before any write
        with atomic_path(path) as tmp:
            frame.to_parquet(tmp, engine="pyarrow", index=False)
            entry = file_entry(data_dir, path, frame, md5_file(tmp), **extra)
            entries[entry["path"]] = entry
            write_manifest(data_dir, kind, entries)
    return entry


def read_verified(
    data_dir: str | os.PathLike, kind: Kind, path: str | os.PathLike, remedy: str
) -> pd.DataFrame:
    """Read the parquet file `path` only after its bytes match their `kind` manifest entry.

    The bytes are read once, checked, then parsed: what is parsed is exactly what was checked.
    A processed file must also have been built from the raw files on disk now (their md5s).

    Args:
        data_dir: the data directory.
        kind: which manifest records the file.
        path: the parquet file (it must exist).
        remedy: what the user should do about a refusal, e.g. the rebuild command.

    Raises:
        ForecastError: one line: no manifest or no entry (unverifiable), an md5 mismatch, stale
            sources, or bytes that are not parquet.
    """
    data_dir, path = Path(data_dir), Path(path)
    manifest = manifest_path(data_dir, kind)
    try:
        entry = load_manifest(data_dir, kind).get(relative(data_dir, path))
    except ForecastError as err:
        raise ForecastError(f"cannot verify {path}: {err}, then {remedy}") from None
    if entry is None:
        why = "does not exist" if not manifest.exists() else "has no entry for it"
        raise ForecastError(f"cannot verify {path}: {manifest} {why}; {remedy}")
    data = path.read_bytes()
    if hashlib.md5(data).hexdigest() != entry.get("md5"):
        raise ForecastError(
            f"{path} does not match its md5 in {manifest} (changed or damaged since written); {remedy}"
        )
    check = Check(path=str(path))
    if kind == "processed":
        _check_sources(data_dir, check, entry)
    if check.problems:
        raise ForecastError(f"{path}: {check.problems[0]}; {remedy}")
    try:
        return pd.read_parquet(io.BytesIO(data))
    except Exception as err:  # matching bytes that pyarrow still refuses: name the file, no trace
        raise ForecastError(f"{path}: not a readable parquet file ({type(err).__name__}); {remedy}") from None
