"""A run folder in use is locked: one process at a time trains into it (docs/reliability.md).

The process that trains into a run folder (rank 0 of a multi-process run) holds ``run.lock`` in it: an exclusive
``flock`` on the file, which the operating system releases when the process ends however it ends (SIGKILL included),
and in the file who holds it (host, process id, start time, command) for the message that refuses a second start. A
lock file left by a dead process holds no lock: the next run takes it over. The file is removed when the run ends.

On a filesystem without file locks (some cluster filesystems mounted without ``flock``), the file alone decides: a
holder on this host whose process has ended, or an earlier start of the same SLURM job, is taken over; any other is
refused, and the message says which file to remove once that process is known to have ended.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import stat
import sys
import time
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_only

from project.errors import UserInputError

try:
    import fcntl
except ImportError:  # Windows: no flock; the lock file alone decides
    fcntl = None

LOCK_FILE = "run.lock"
_NO_LOCKS = (errno.ENOLCK, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP)
"""What ``flock`` fails with on a filesystem that does not support it."""


class RunInUseError(UserInputError):
    """Another live process trains into the run folder."""


def first_process() -> bool:
    """Whether this is the first process of the run (global rank 0), from the launchers' environment (``RANK``,
    ``LOCAL_RANK``, ``SLURM_PROCID`` as Lightning reads them, and ``NODE_RANK`` / ``GROUP_RANK``): known before the
    processes of a multi-process run know each other."""
    return rank_zero_only.rank == 0 and all(os.environ.get(name, "0") == "0" for name in ("NODE_RANK", "GROUP_RANK"))


def _in_use_message(folder: Path, holder: str) -> str:
    return (
        f"{folder} is in use: {holder} trains into it. Two runs in one folder would overwrite each other's last.ckpt "
        f"and TensorBoard files: wait for it to end, or stop it and resume then (if it has ended already, remove "
        f"{folder / LOCK_FILE})"
    )


def holder_info() -> dict[str, Any]:
    """Who this process is, as the lock file records it: the command up to its first option (the rest may hold
    what others should not read, such as a tracker's key)."""
    words = list(sys.orig_argv)
    command = words[: next((i for i, word in enumerate(words) if i and word.startswith("-") and word != "-m"), None)]
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join(command)[:200],
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
    }


def describe(info: dict[str, Any] | None) -> str:
    if not info:
        return "another process (its lock file cannot be read)"
    who = f"process {info.get('pid')} on {info.get('host')} (since {info.get('started')}: {info.get('command')})"
    if info.get("host") == socket.gethostname() and not _process_alive(info.get("pid")):
        who += ", which has ended while its data-loading workers still hold the lock for a moment: try again"
    return who


def _read_info(path: Path) -> dict[str, Any] | None:
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _process_alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, under another user
        return True
    return True


def _held_without_flock(info: dict[str, Any] | None) -> bool:
    """Whether a lock file's holder may still be running, judged from the file (no flock on this filesystem)."""
    if info is None:
        return True
    if info.get("host") == socket.gethostname():
        return info.get("pid") != os.getpid() and _process_alive(info.get("pid"))
    job = os.environ.get("SLURM_JOB_ID")
    return not (job and info.get("slurm_job_id") == job)  # an earlier start of this very job has ended


def try_flock(descriptor: int, exclusive: bool) -> bool | None:
    """Take the lock without waiting: ``True`` if taken, ``False`` if another process holds it, ``None`` if the
    filesystem has no locks."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(descriptor, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as error:
        if error.errno in _NO_LOCKS:
            return None
        raise
    return True


def _open_lock_file(path: Path, flags: int) -> int:
    """The lock file, opened without following a link (a link named ``run.lock`` could point at any file the user
    may write); :class:`UserInputError` when it is not a plain file or cannot be opened."""
    try:
        descriptor = os.open(path, flags | getattr(os, "O_NOFOLLOW", 0), 0o666)
    except FileNotFoundError:
        raise
    except OSError as error:
        raise UserInputError(f"{path} cannot be opened ({error.strerror}): it must be a file you may write") from None
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise UserInputError(f"{path} is not a plain file: remove it")
    return descriptor


def live_holder(folder: Path) -> str | None:
    """Who trains into ``folder`` now (in words), or ``None`` when no live process does."""
    path = folder / LOCK_FILE
    try:
        descriptor = _open_lock_file(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except UserInputError:  # another user's, unreadable: taken as held
        return describe(None)
    try:
        taken = try_flock(descriptor, exclusive=False)
        info = _read_info(path)
        held = (not taken) if taken is not None else _held_without_flock(info)
    finally:
        os.close(descriptor)  # also drops the shared lock just taken
    return describe(info) if held else None


class RunLock:
    """The lock on one run folder, held by the process that trains into it (see the module's docstring)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.descriptor: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise :class:`RunInUseError` naming the live process that holds it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        while self.descriptor is None:
            descriptor = _open_lock_file(self.path, os.O_RDWR | os.O_CREAT)
            taken = try_flock(descriptor, exclusive=True)
            if taken is None:
                taken = not _held_without_flock(_read_info(self.path)) if os.fstat(descriptor).st_size else True
            if not taken:
                os.close(descriptor)
                raise RunInUseError(_in_use_message(self.folder, describe(_read_info(self.path))))
            if self.still_at_path(descriptor):  # not a file that the previous holder removed meanwhile
                os.ftruncate(descriptor, 0)
                os.write(descriptor, (json.dumps(holder_info()) + "\n").encode())
                os.fsync(descriptor)
                self.descriptor = descriptor
            else:
                os.close(descriptor)

    def still_at_path(self, descriptor: int) -> bool:
        try:
            return os.lstat(self.path).st_ino == os.fstat(descriptor).st_ino
        except FileNotFoundError:
            return False

    def release(self) -> None:
        """Remove the lock file and let go; an empty run folder (the run wrote nothing) goes too."""
        if self.descriptor is not None:
            self.path.unlink(missing_ok=True)  # before the lock goes: the next holder finds no half-removed file
            os.close(self.descriptor)
            self.descriptor = None
        with contextlib.suppress(OSError):
            self.folder.rmdir()  # only when empty
