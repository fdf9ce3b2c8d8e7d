"""Decoded images on disk: a folder's or a CSV's images decoded once, then read back by index in every later epoch
and every later run, whatever their number (the data-at-any-size path; docs/data_at_scale.md).

A cache file is one page of header (JSON: the format, the key, the number and shape of the images) followed by the
images' uint8 pixels, ``(N, C, H, W)`` in the order of the dataset's files. Its **name** says which images and which
conversion it holds (the source's folder name and a hash of its resolved path and the conversion), so that when the
files change the new cache replaces the old one instead of piling up beside it; its **key** (a hash of every file's
path, size and modification time, the conversion and the decoders' versions) says whether it still holds them.

Written whole or not at all (:func:`project.files.atomic.written_whole`: a temporary file renamed over the name), and
checked when opened (format, key, shape, and a size that is exactly header + pixels, so a truncated file is seen):
a cache that does not match is rebuilt. One process at a time checks and builds a cache (a lock file beside it), so
processes and runs that start together decode once; the others wait, then open it. A cache that cannot be written (a
read-only folder, a full disk) is one line on the console, and the data is decoded as it was before the cache
existed. Reading maps the file read-only, from the descriptor its header was checked on (a cache rebuilt since by
another run is a new file; this one stays as it was): the operating system's page cache holds what was read, the
process does not, and a batch is a gather of rows by index.

A cache folder may be shared: the cache file and its lock are opened as regular files only, never through a
symbolic link and never waiting on a FIFO (anything else there is said and replaced, or, for the lock, the cache is
not used); and since the pixels are what a run trains on, a cache file is trusted only when no one else can have
written it (yours, and writable by you alone), unless the folder is named as shared (``data.decoded.cache_shared``).
A file that another user owns is left alone and the cache is kept in a folder of your own inside it (``user-<uid>``);
one of yours that others may write is rebuilt.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import math
import mmap
import os
import stat
import tempfile
import warnings
from collections.abc import Callable, Generator, Iterator
from contextlib import closing, contextmanager, suppress
from pathlib import Path
from typing import Any

import PIL
import torch
import torchvision
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from project.data.decoding import DECODER_VERSION, UndecodableImages, undecodable
from project.errors import DiskFullError, UserInputError, first_line
from project.files.atomic import TEMPORARY_SUFFIX, free_bytes, written_whole

CACHE_DIR_ENV = "PROJECT_CACHE_DIR"
"""Environment variable naming the cache folder when ``--data.decoded.cache_dir`` is not given (else ``./cache``)."""
FORMAT = 1
"""The layout of a cache file; a file of another format is rebuilt."""
HEADER_BYTES = 4096
"""The header's size: one page, so the pixels start page-aligned."""
MAGIC = b"project decoded images\n"
SUFFIX = ".decoded"
_SPARE_BYTES = 2**26
"""Space a cache leaves free on its disk (64 MiB): a cache that would fill the disk is not written."""
_MAX_BRACKETS = 8
"""The most ``[`` and ``{`` a header may hold (it has two): :func:`json.loads` recurses once per level of nesting, so
a header of nested arrays would be a ``RecursionError``, not a damaged header."""
_OTHERS_WRITE = stat.S_IWGRP | stat.S_IWOTH
"""The mode bits that let someone other than a file's owner change it: a cache file is written without them."""
KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFDIR: "a folder", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a device"}
"""What the types of file other than a regular one are called (any other: "something else")."""


def resolve_cache_dir(cache_dir: str | os.PathLike | None) -> Path:
    """The cache folder: the argument, else ``$PROJECT_CACHE_DIR``, else ``./cache`` (beside ``./logs``)."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    from_env = os.environ.get(CACHE_DIR_ENV)
    return Path(from_env).expanduser() if from_env else Path("cache")


def digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def _cache_path(cache_dir: Path, source: Path, conversion: str) -> Path:
    """Where the cache of ``source``'s images under ``conversion`` (its description) lives (an absolute path: a
    process that changes folders finds the same file)."""
    name = "".join(c if c.isalnum() or c in "-_" else "_" for c in source.stem)[:40] or "images"
    return cache_dir.resolve() / f"{name}-{digest(str(source.resolve()), conversion)[:16]}{SUFFIX}"


def cache_key(paths: list[Path], folder: Path, conversion: str) -> str:
    """What the cache must have been built from: each file's path (relative to ``folder``, the source's folder, so
    that ``data/x`` and ``/home/me/data/x`` agree), size, modification and change times (nanoseconds) and inode, the
    conversion, and the versions of the code that decodes and resizes (this project's, PIL, torchvision). A file
    that cannot be found is refused here, with all the others, before anything is decoded."""
    files, missing, prefix = hashlib.sha256(), [], f"{folder}{os.sep}"
    for path in paths:
        try:
            status = path.stat()
        except OSError as error:
            missing.append(f"{path} ({first_line(error)})")
            continue
        text = str(path)
        name = text[len(prefix) :] if text.startswith(prefix) else text
        stamp = f"{status.st_size}\0{status.st_mtime_ns}\0{status.st_ctime_ns}\0{status.st_ino}"
        files.update(f"{name}\0{stamp}\n".encode())
    if missing:
        raise undecodable(missing)
    versions = f"format {FORMAT} decoder {DECODER_VERSION} PIL {PIL.__version__} torchvision {torchvision.__version__}"
    return digest(versions, conversion, files.hexdigest())


class _NotAFile(OSError):
    """Something other than a regular file where a cache or its lock file should be; its text says what."""


class _Untrusted(Exception):
    """A cache file that another user owns, in a folder not named as shared: they decide what it holds."""


_ERRNO_KINDS = {
    errno.ELOOP: "a symbolic link, not followed",  # open(2): O_NOFOLLOW, and the last part of the path is a link
    errno.EISDIR: "a folder, not a regular file",
    errno.ENXIO: "not a regular file",  # open(2): a socket
}


def open_file(path: Path, flags: int) -> int:
    """A descriptor of the regular file at ``path`` (made where missing when ``flags`` holds ``O_CREAT``), opened
    without following a symbolic link (``O_NOFOLLOW``: one planted in a shared folder would write, or be read, where
    its owner points) and without waiting on a FIFO (``O_NONBLOCK``: opening one waits for a writer, for ever);
    :class:`_NotAFile` saying what is there instead."""
    try:
        descriptor = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o666)
    except OSError as error:
        if error.errno in _ERRNO_KINDS:
            raise _NotAFile(_ERRNO_KINDS[error.errno]) from None
        raise
    kind = stat.S_IFMT(os.fstat(descriptor).st_mode)
    if kind != stat.S_IFREG:
        os.close(descriptor)
        raise _NotAFile(f"{KINDS.get(kind, 'something else')}, not a regular file")
    return descriptor


def distrusted(path: Path, status: os.stat_result) -> str | None:
    """Whether someone else may have chosen the pixels of the cache file at ``path`` (``status``, from its open
    descriptor): :class:`_Untrusted` where another user owns it; why it is rebuilt where others may write it;
    ``None`` where it is yours alone."""
    if status.st_uid != os.geteuid():
        raise _Untrusted(f"the decoded-image cache {path} belongs to another user (uid {status.st_uid})")
    if status.st_mode & _OTHERS_WRITE:
        return f"others may write it ({stat.filemode(status.st_mode)})"
    return None


class DecodedCache:
    """A checked cache file: :meth:`pixels` are its images (``count`` x ``shape``, uint8), mapped read-only from the
    descriptor its header was checked on. Pickled (to a DataLoader worker that is not forked) it carries the path
    and key, and the worker checks and maps the file itself. ``shared``: the folder is shared with people you trust,
    and a file another user wrote there is opened (else only yours, which you alone may write)."""

    def __init__(self, path: Path, key: str, count: int, shape: tuple[int, int, int], shared: bool = False) -> None:
        self.path, self.key, self.count, self.shape, self.shared = path, key, count, tuple(shape), shared
        self.mapped: Tensor | None = None

    @property
    def nbytes(self) -> int:
        return self.count * math.prod(self.shape)

    def open(self) -> str | None:
        """Check the file and map it; ``None``, or why it cannot serve (missing, not a regular file, others may write
        it, another format or key, damaged); :class:`_Untrusted` where another user owns it (not ``shared``)."""
        try:
            with os.fdopen(open_file(self.path, os.O_RDONLY), "rb") as file:  # the mapping outlives the descriptor
                status = os.fstat(file.fileno())
                wrong = None if self.shared else distrusted(self.path, status)
                wrong = wrong or what_is_wrong(file.read(HEADER_BYTES), status.st_size, self)
                region = None if wrong else mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
        except FileNotFoundError:
            return "there is none yet"
        except _NotAFile as error:
            return f"it is {error}"
        except OSError as error:
            return f"it cannot be read ({first_line(error)})"
        if region is not None:
            with warnings.catch_warnings():  # read-only memory: every reader here copies out of it
                warnings.filterwarnings("ignore", message=".*not writable.*")
                flat = torch.frombuffer(region, dtype=torch.uint8, count=self.nbytes, offset=HEADER_BYTES)
            self.mapped = flat.view(self.count, *self.shape)
        return wrong

    def pixels(self) -> Tensor:
        """The images, ``(count, C, H, W)`` uint8, read-only (copy what you take), read from disk on access."""
        if self.mapped is None:
            try:
                wrong = self.open()
            except _Untrusted as error:
                wrong = str(error)
            if wrong is not None:
                raise UserInputError(f"the decoded-image cache {self.path} cannot be read any more: {wrong}")
        return self.mapped

    def load(self) -> Tensor:
        """The images read into memory (for data small enough to be held: the in-memory path)."""
        return self.pixels().clone()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "mapped": None}


def header(key: str, count: int, shape: tuple[int, int, int]) -> bytes:
    text = json.dumps({"format": FORMAT, "key": key, "count": count, "shape": list(shape), "dtype": "uint8"})
    return (MAGIC + text.encode() + b"\n").ljust(HEADER_BYTES, b" ")


def what_is_wrong(start: bytes, size: int, cache: DecodedCache) -> str | None:
    """Why a file that begins with ``start`` and has ``size`` bytes is not ``cache`` (``None``: it is)."""
    if not start.startswith(MAGIC):
        return "it is not a cache file of this project"
    text = start[len(MAGIC) :].split(b"\n", 1)[0]
    if text.count(b"[") + text.count(b"{") > _MAX_BRACKETS:
        return "its header is damaged (nested too deep)"
    try:
        stated = json.loads(text)
    except ValueError:
        return "its header is damaged"
    if not isinstance(stated, dict) or stated.get("format") != FORMAT:
        return "it was written in another format"
    if (stated.get("key"), stated.get("count"), stated.get("shape")) != (cache.key, cache.count, list(cache.shape)):
        return "the images or their conversion changed since it was written"
    if size != HEADER_BYTES + cache.nbytes:
        return f"it is damaged: {size:,} bytes where {HEADER_BYTES + cache.nbytes:,} were written (truncated?)"
    return None


class _CacheNotWritten(Exception):
    """The cache could not be written (a read-only or full disk): the data is decoded without it."""


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold ``path``'s lock file (beside it) while the block runs: one process at a time checks and builds a cache;
    :class:`_CacheNotWritten` where the folder cannot take the lock file or something other than a regular file is
    there (a link is not followed, a FIFO not waited on). Where the file system has no locks, the block runs unlocked
    (two builds then write the same file, each whole)."""
    lock = path.with_name(path.name + ".lock")
    try:  # a folder that cannot take a file is found here, before any image is decoded
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            descriptor = open_file(lock, os.O_RDWR | os.O_CREAT)
        except PermissionError:  # another user's lock file in a shared folder: flock(2) takes any descriptor
            if not os.path.lexists(lock):
                raise
            descriptor = open_file(lock, os.O_RDONLY)
    except _NotAFile as error:
        raise _CacheNotWritten(f"its lock file {lock} is {error}") from None
    except OSError as error:
        raise _CacheNotWritten(first_line(error)) from None
    try:
        with suppress(OSError):
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # and with it the lock


def _own_folder(folder: Path) -> Path:
    """The sub-folder of ``folder`` that holds this user's caches (``user-<uid>``), made when missing;
    :class:`_CacheNotWritten` unless it is a folder (not a link) of this user's that no one else may write."""
    own = folder / f"user-{os.geteuid()}"
    try:
        own.mkdir(mode=0o700, exist_ok=True)
        status = own.lstat()
    except OSError as error:
        raise _CacheNotWritten(first_line(error)) from None
    if not stat.S_ISDIR(status.st_mode) or status.st_uid != os.geteuid() or status.st_mode & _OTHERS_WRITE:
        raise _CacheNotWritten(f"{own} is not a folder that you alone may write")
    return own


def _build(cache: DecodedCache, chunks: Iterator[Tensor]) -> None:
    """Write the images that ``chunks`` yields (uint8, ``(n, *shape)`` each) into a new cache file; the old one, if
    any, is replaced whole. :class:`_CacheNotWritten` when the disk refuses (nothing is left behind); the images' own
    errors (:class:`~project.data.decoding.UndecodableImages`) as they are."""
    folder = cache.path.parent
    for stale in folder.glob(f".{cache.path.name}.*{TEMPORARY_SUFFIX}"):  # a killed build's (we hold the lock)
        stale.unlink(missing_ok=True)
    try:
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as error:
        raise _CacheNotWritten(first_line(error)) from None
    needed = HEADER_BYTES + cache.nbytes
    if free_bytes(folder) < needed + _SPARE_BYTES:
        raise _CacheNotWritten(f"it needs {needed:,} bytes and {free_bytes(folder):,} are free")
    try:
        with written_whole(
            cache.path,
            full_message=lambda: f"No space left on device while it was written; {free_bytes(folder):,} bytes free",
            permissions=0o666 & ~_OTHERS_WRITE,  # no one else may change the pixels a run trains on
        ) as file:
            file.write(header(cache.key, cache.count, cache.shape))
            for chunk in chunks:
                file.write(memoryview(chunk.contiguous().numpy()).cast("B"))
    except UndecodableImages:
        raise
    except (DiskFullError, UserInputError, OSError) as error:  # full, or the rename refused
        raise _CacheNotWritten(first_line(error)) from None


def cached_images(
    paths: list[Path],
    shape: tuple[int, int, int],
    place: tuple[Path, Path, Path, str],
    decode_chunks: Callable[[], Generator[Tensor, None, None]],
    shared: bool = False,
) -> DecodedCache | None:
    """The cache of ``paths`` decoded to ``shape``: opened when it is there and right, else built from
    ``decode_chunks()``; ``None`` when it cannot be written (said in one line). ``place`` is the cache folder, the
    source (folder or CSV file) the images come from, the folder their paths start from, and the conversion's
    description. A cache file that another user owns is left alone unless the folder is ``shared``: the cache is
    then kept in a folder of your own inside it (:func:`_own_folder`), and a line says so."""
    cache_dir, source, folder, conversion = place
    key = cache_key(paths, folder, conversion)
    path = _cache_path(cache_dir, source, conversion)
    try:
        try:
            cache = _opened_or_built(DecodedCache(path, key, len(paths), shape, shared), source, decode_chunks)
        except _Untrusted as error:
            own = _own_folder(path.parent)
            rank_zero_info(
                f"note: {error}, who decides what it holds: yours is kept in {own} (--data.decoded.cache_shared "
                f"true trusts the cache files others write in {cache_dir})"
            )
            cache = _opened_or_built(DecodedCache(own / path.name, key, len(paths), shape), source, decode_chunks)
    except (_CacheNotWritten, _Untrusted) as error:
        rank_zero_info(
            f"note: the decoded-image cache cannot be written in {cache_dir} ({error}): the images are decoded "
            f"without it (--data.decoded.cache_dir elsewhere, or --data.decoded.cache false to silence this)"
        )
        return None
    cache.pixels()
    return cache


def _opened_or_built(
    cache: DecodedCache, source: Path, decode_chunks: Callable[[], Generator[Tensor, None, None]]
) -> DecodedCache:
    """``cache``, checked, or built from ``decode_chunks()`` when it is not right (its lock held throughout)."""
    with locked(cache.path):
        wrong = cache.open()
        if wrong is not None:
            rank_zero_info(f"Decoding {cache.count:,} images of {source} into the cache {cache.path} ({wrong})")
            # Closed here, in this process: an unfinished DataLoader iterator left to the garbage collector is shut
            # down by its __del__ wherever it is collected, and in the forked workers of the next DataLoader torch
            # prints "AssertionError: can only test a child process" (torch.utils.data.dataloader,
            # _MultiProcessingDataLoaderIter.__del__ -> _shutdown_workers) beside the one-line note.
            with closing(decode_chunks()) as chunks:
                _build(cache, chunks)
    return cache
