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


def umask_mode(full: int = 0o666) -> int:
    """``full`` with the bits the process's umask removes removed: the mode a newly created file gets."""
    umask = os.umask(0)
    os.umask(umask)
    return full & ~umask


def free_bytes(folder: Path) -> int:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return 0


@contextmanager
def written_whole(
    path: Path, mode: str = "wb", full_message: Callable[[], str] | None = None, **open_args: Any
) -> Iterator[IO]:
    """A file to write ``path`` through: renamed over ``path`` when the block ends without an error, removed when it
    does not. A full disk raises :class:`DiskFullError` with ``full_message()`` (default: names the file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(descriptor, mode, **open_args) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, umask_mode())
        os.replace(temporary, path)
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        if disk_full(error) is not None:
            kept = f"{path} is unchanged" if path.exists() else "nothing was written"
            message = full_message() if full_message else (
                f"No space left on device while writing {path} ({free_bytes(path.parent):,} bytes free; {kept}): "
                f"free some space and run again"
            )
            raise DiskFullError(message) from None
        raise
    fsync_folder(path.parent)  # make the rename itself durable


@contextmanager
def written_folder(out: Path) -> Iterator[Path]:
    """A folder to write ``out``'s files into: renamed to ``out`` (which must not exist) with all of them when the
    block ends without an error, removed when it does not; a full disk raises :class:`DiskFullError`."""
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    except OSError as error:
        raise UserInputError(f"{out}: its folder cannot be written ({first_line(error)})") from None
    try:
        yield staging
        staging.chmod(umask_mode(0o777))  # not the private mode of a temporary folder
        for path in staging.iterdir():
            path.chmod(umask_mode())
        staging.rename(out)
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        if disk_full(error) is not None:
            raise DiskFullError(
                f"No space left on device while writing {out} ({free_bytes(out.parent):,} bytes free): nothing was "
                f"written; free some space and run again"
            ) from None
        raise


def fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
