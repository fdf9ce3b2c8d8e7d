"""Files written whole or not at all, readable as any other file the run writes.

:func:`written_whole` writes to a temporary file in the destination's folder, flushes it to disk and renames it over
the destination, which a POSIX filesystem does atomically: the path holds the old file or the new one, never half of
one, and a failed write leaves no temporary file. The new file gets the mode the umask gives (``-rw-r--r--`` under
the usual 022), not the private ``-rw-------`` of a temporary file: a teammate, or a serving job under another user,
can read checkpoints and predictions as they read the logs. A full disk is one :class:`~project.errors.DiskFullError`
naming the file. :func:`written_folder` does the same for a folder of files (an export): all of them, or none.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from project.errors import DiskFullError, UserInputError, disk_full, first_line

TEMPORARY_SUFFIX = ".tmp"
"""The temporary files are ``.<name>.<random>.tmp`` beside the destination."""


def umask() -> int:
    """The process's umask, read without changing it where Linux tells it (``/proc/self/status``); elsewhere set and
    put back at once."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    previous = os.umask(0o022)
    os.umask(previous)
    return previous


def _umask_mode(full: int = 0o666) -> int:
    """``full`` with the bits the process's umask removes removed: the mode a newly created file gets."""
    return full & ~umask()


def free_bytes(folder: Path) -> int:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return 0


def _failed_write(error: BaseException, path: Path, full_message: Callable[[], str] | None = None) -> Exception | None:
    """What a write of ``path`` that failed with ``error`` is said as: :class:`DiskFullError` for a full disk or
    quota, :class:`UserInputError` for a path that cannot be written (permissions, a file where a folder should be);
    ``None``: not the user's to fix, let it stand."""
    if disk_full(error) is not None:
        kept = f"{path} is unchanged" if os.path.lexists(path) else "nothing was written"
        return DiskFullError(
            full_message()
            if full_message
            else f"No space left on device while writing {path} "
            f"({free_bytes(path.parent):,} bytes free; {kept}): free some space and run again"
        )
    if isinstance(error, PermissionError | FileExistsError | NotADirectoryError | IsADirectoryError):
        return UserInputError(f"{path} cannot be written ({first_line(error)})")
    return None


@contextmanager
def written_whole(
    path: Path,
    mode: str = "wb",
    full_message: Callable[[], str] | None = None,
    permissions: int = 0o666,
    **open_args: Any,
) -> Iterator[IO]:
    """A file to write ``path`` through: renamed over ``path`` when the block ends without an error, removed when it
    does not (:func:`_failed_write` says why in one line; ``full_message()`` for a full disk). The file's mode is
    ``permissions`` less what the umask removes."""
    path, temporary = Path(path), None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX, dir=path.parent)
        with os.fdopen(descriptor, mode, **open_args) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, _umask_mode(permissions))
        os.replace(temporary, path)
    except BaseException as error:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
        said = _failed_write(error, path, full_message)
        if said is not None:
            raise said from None
        raise
    _fsync_folder(path.parent)  # make the rename itself durable


@contextmanager
def written_folder(out: Path) -> Iterator[Path]:
    """A folder to write ``out``'s files into: when the block ends without an error they become ``out`` (renamed to
    it, or, when ``out`` is a folder already, each moved into it over the file of its name: renames, which a full
    disk does not stop); when it does not, none of them is left (:func:`_failed_write` says why in one line)."""
    out, staging = Path(out), None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
        yield staging
        staging.chmod(_umask_mode(0o777))  # not the private mode of a temporary folder
        for path in staging.iterdir():
            path.chmod(_umask_mode())
        if out.is_dir():
            for path in staging.iterdir():
                os.replace(path, out / path.name)
            staging.rmdir()
        else:
            staging.rename(out)
    except BaseException as error:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        said = _failed_write(error, out)
        if said is not None:
            raise said from None
        raise
    _fsync_folder(out)


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
