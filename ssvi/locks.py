"""Exclusive locks on (shared) file systems: ``flock`` on a lock file, and a note in it naming the holder.

    fd = acquire(path, "pid 12 on node3, ssvi train", wait_s=2.0)   # LockHeld(note) when another holds it
    ...
    release(fd)
    holder(path)        # the holder's note, or None when nobody holds the lock (a non-blocking probe)

The OS drops an ``flock`` when its process dies (``kill -9`` included), so a lock is never stale. On NFS, Linux
emulates ``flock`` with POSIX byte-range locks, which the NFS lock manager (NLM for NFSv3, built into NFSv4)
makes exclusive across client machines; Lustre does the same when mounted with ``-o flock`` (``localflock``
locks only within one node). A file system without locks at all makes :func:`acquire` raise
:class:`LocksUnsupported` instead of pretending to hold one.

Used by ``run.lock`` (one process per run directory, :mod:`ssvi.rundir`) and ``workflow.lock`` (one workflow
instance per results directory, :func:`hold_results_directory`).
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import time
from pathlib import Path

from .errors import UserError

NOTE_BYTES = 400
UNSUPPORTED = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)
WORKFLOW_LOCK = "workflow.lock"


class LockHeld(Exception):
    """Another process holds the lock; ``note`` names it."""

    def __init__(self, note: str):
        super().__init__(note)
        self.note = note


class LocksUnsupported(UserError):
    """The file system holding a lock file does not support ``flock``."""


def acquire(path: Path, note: str, wait_s: float = 0.0) -> int:
    """Hold ``path`` exclusively (created if needed) and write ``note`` into it; the open descriptor, for
    :func:`release`. Retries for ``wait_s`` seconds, then raises :class:`LockHeld` with the holder's note.
    An OSError opening the file is left to the caller."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                raise LockHeld(_note(fd)) from None
            except OSError as error:
                if error.errno in UNSUPPORTED:
                    raise LocksUnsupported(f"the file system holding {path} does not support file locks "
                                           f"({error.strerror}); use a file system that does (local disks, NFS "
                                           "with its lock manager, Lustre mounted with -o flock)") from None
                raise
        os.ftruncate(fd, 0)
        try:
            os.pwrite(fd, f"{note}\n".encode(), 0)
        except OSError:
            pass  # a full disk: the lock holds without the note
    except BaseException:
        os.close(fd)
        raise
    return fd


def release(fd: int, clear: bool = False) -> None:
    """Drop the lock (``clear``: empty the note first, so that no old holder is named later)."""
    if clear:
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass
    os.close(fd)


def holder(path: Path) -> str | None:
    """Who holds ``path`` (its note), or None when nobody does (a non-blocking probe; never creates the file)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _note(fd)
        except OSError:
            return None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _note(fd: int) -> str:
    return os.pread(fd, NOTE_BYTES, 0).decode(errors="replace").strip() or "unknown"


def process_note(what: str) -> str:
    """"pid N on HOST, <what>": who a lock's holder is."""
    return f"pid {os.getpid()} on {socket.gethostname()}, {what}"


# --------------------------------------------------------------------------------------------
# one workflow instance per results directory
# --------------------------------------------------------------------------------------------

_results_locks: dict[Path, int] = {}  # results directories this process holds -> descriptor


def hold_results_directory(results_dir: str | Path, checkout: str | Path) -> Path:
    """Hold ``results_dir/workflow.lock`` for this process (the Snakemake instance that runs jobs there) until
    :func:`release_results_directory` or the process's exit; a second instance is refused with one line naming
    the holder: its pid, host, checkout and working directory. Returns the lock file."""
    from .files import make_directory
    results_dir = make_directory(results_dir)
    path = results_dir / WORKFLOW_LOCK
    key = Path(os.path.abspath(path))
    if key in _results_locks:
        return path
    note = process_note(f"snakemake of the checkout {os.path.abspath(checkout)} (working directory {os.getcwd()}), "
                        f"since {time.strftime('%Y-%m-%d %H:%M:%S')}")
    try:
        _results_locks[key] = acquire(path, note)
    except LockHeld as held:
        raise UserError(f"the results directory {results_dir} is in use by another workflow instance ({held.note}); "
                        "wait for it to finish (or stop it), or give this config another results_dir") from None
    except OSError as error:
        from .files import write_error
        raise write_error(path, error) from None
    return path


def release_results_directory() -> None:
    """Drop every results-directory lock this process holds (the workflow's onsuccess / onerror)."""
    while _results_locks:
        release(_results_locks.popitem()[1], clear=True)
