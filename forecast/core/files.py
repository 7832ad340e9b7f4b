"""Atomic file writes and checksums: nothing half-written is ever left on disk."""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a folder, not a file", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        try:
            yield tmp
        except OSError as err:  # a write that failed (full disk): name the file asked for, not the temporary one
            if err.filename in (None, str(tmp)) and err.errno is not None:
                raise OSError(err.errno, err.strerror, str(path)) from None
            raise
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file normal permissions
        try:
            os.replace(tmp, path)
        except OSError as err:  # name the file the user asked for, not the temporary one
            raise OSError(err.errno, err.strerror, str(path)) from None
    finally:
        tmp.unlink(missing_ok=True)


STALE_S = 3600  # a temporary file of ours untouched this long belongs to a killed writer


def _clean_stale(path: Path) -> None:
    """Remove the temporary files a killed writer of `path` left (our naming: `.<name>.<random>.tmp`,
    untouched for `STALE_S`); a live writer's file is newer and stays."""
    now = time.time()
    for old in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        with contextlib.suppress(OSError):
            if now - old.stat().st_mtime > STALE_S:
                old.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def check_writable(folders: list[Path]) -> None:
    """The folders a command will write into can be written, checked before it starts work (inside
    the Trainer a failure is hidden behind the teardown's own error, the network still on `meta`). A
    folder not there yet is checked at its nearest existing parent; nothing is created or left.

    Raises:
        OSError: naming the folder (read-only, no permission, a file where the folder goes).
    """
    for folder in folders:
        probe = folder
        while not probe.exists() and probe.parent != probe:
            probe = probe.parent
        if not probe.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(probe))
        try:
            tempfile.TemporaryFile(dir=probe).close()  # unnamed, gone on close: nothing is left
        except OSError as err:
            raise OSError(err.errno, err.strerror, str(folder)) from None


def md5_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
