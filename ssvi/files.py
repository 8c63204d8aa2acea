"""Durable result files: every write is write-temp-then-rename, a full disk is one error, and what is written
can be checked later by its size and SHA-256.

    record = save_torch(path, obj)       # {"bytes": ..., "sha256": ...} of what was written
    record = write_json(path, value)
    problem = check_file(path, record, full=False)   # None, or what is wrong (missing, truncated, ...)

A write goes to ``.<name>.tmp`` beside the target, is flushed to the disk (``fsync``) and renamed over the
target, so a reader sees the old file or the new one, never half of one; the temporary file is removed on
any failure (a full disk, Ctrl-C, SIGTERM, a bug). ``torch.save`` is serialised into memory first and
written with Python's own file calls: a full disk is then an ``OSError`` with ``errno`` ENOSPC, which
becomes :class:`DiskFullError` naming the file system and the file, instead of torch's zip-writer error
(``unexpected pos ...``) that names neither. A file system that refuses the write (read-only, no
permission) is :class:`NotWritableError`, one line naming the file.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

from .errors import UserError

HASH = "sha256"
CHUNK = 1 << 20
FULL_DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT)
NOT_WRITABLE_ERRORS = (errno.EROFS, errno.EACCES, errno.EPERM)


class DiskFullError(UserError, OSError):
    """No space (or no quota) left while writing a file; ``advise`` adds what re-running will do."""

    def __init__(self, path: Path, reason: str = "no space left", advice: str = ""):
        self.path, self.reason = Path(path), reason
        message = f"{reason} on {mount_point(self.path)} while writing {self.path}"
        super().__init__(message + (f"; free space and re-run: {advice}" if advice else ""))

    def advise(self, advice: str) -> "DiskFullError":
        return DiskFullError(self.path, self.reason, advice)


class NotWritableError(UserError, OSError):
    """The file system refuses to write a file (read-only, or no permission)."""

    def __init__(self, path: Path, reason: str):
        self.path = Path(path)
        super().__init__(f"cannot write {self.path} ({reason}, {mount_point(self.path)}); make it writable, or "
                         "write somewhere else")


def write_error(path: Path, error: OSError) -> OSError:
    """A full disk or a refused write as its one-line error; any other OSError as it is."""
    if error.errno in FULL_DISK_ERRORS:
        return DiskFullError(path, "disk quota exceeded" if error.errno == errno.EDQUOT else "no space left")
    if error.errno in NOT_WRITABLE_ERRORS:
        return NotWritableError(path, error.strerror.lower() if error.strerror else "not writable")
    return error


def make_directory(path: str | Path) -> Path:
    """``mkdir -p``; a full disk or a refused write is its one-line error."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise write_error(path, error) from None
    return path


def mount_point(path: Path) -> str:
    """The mount point of the file system holding ``path`` (the 'device' a user frees space on)."""
    current = Path(os.path.abspath(path))
    while not current.exists() or not os.path.ismount(current):
        if current.parent == current:
            break
        current = current.parent
    return f"the file system mounted at {current}"


def temporary_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


def write_bytes(path: str | Path, data: bytes | memoryview) -> dict:
    """Write ``data`` to ``path`` atomically and durably; return its size and SHA-256."""
    path = Path(path)
    tmp = temporary_path(path)
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(error, OSError) and not isinstance(error, UserError):
            converted = write_error(path, error)
            if converted is not error:
                raise converted from None
        raise
    _sync_directory(path.parent)
    return {"bytes": len(data), HASH: hashlib.sha256(data).hexdigest()}


def _sync_directory(directory: Path) -> None:
    """Make the rename itself durable (best effort: some file systems refuse a directory fsync)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text(path: str | Path, text: str) -> dict:
    return write_bytes(path, text.encode())


def write_json(path: str | Path, value: Any, indent: int | None = 1) -> dict:
    return write_text(path, json.dumps(value, indent=indent, default=_plain))


def _plain(value):
    """numpy scalars in JSON (the report layer's numbers)."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {value!r}")


def save_torch(path: str | Path, obj: Any) -> dict:
    """``torch.save(obj)`` to ``path`` through :func:`write_bytes`."""
    import torch
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return write_bytes(path, buffer.getbuffer())


def file_record(path: str | Path) -> dict:
    """Size and SHA-256 of an existing file (read in chunks)."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return {"bytes": size, HASH: digest.hexdigest()}


def check_file(path: str | Path, record: dict, full: bool = False) -> str | None:
    """What is wrong with ``path`` against its recorded size (and, with ``full``, SHA-256); None if nothing."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "missing"
    except OSError as error:
        return f"unreadable ({error.strerror})"
    if size != record["bytes"]:
        return f"{size} bytes where {record['bytes']} were recorded: truncated or overwritten"
    if full:
        try:
            actual = file_record(path)[HASH]
        except OSError as error:
            return f"unreadable ({error.strerror})"
        if actual != record[HASH]:
            return f"its {HASH.upper()} differs from the one recorded: corrupted"
    return None


def read_verified(path: str | Path, record: dict | None) -> bytes:
    """The bytes of ``path``; ValueError naming the problem when they do not match ``record`` (if any)."""
    data = Path(path).read_bytes()
    if record is not None:
        if len(data) != record["bytes"]:
            raise ValueError(f"{len(data)} bytes where {record['bytes']} were recorded: truncated or overwritten")
        if hashlib.sha256(data).hexdigest() != record[HASH]:
            raise ValueError(f"its {HASH.upper()} differs from the one recorded: corrupted")
    return data


def remove_stale_temporaries(directory: Path) -> None:
    """Delete ``.*.tmp`` files a process killed mid-write (kill -9, power loss) left in ``directory``."""
    for tmp in Path(directory).glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
