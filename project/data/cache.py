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
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import mmap
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
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
"""Environment variable naming the cache folder when ``--data.cache_dir`` is not given (else ``./cache``)."""
FORMAT = 1
"""The layout of a cache file; a file of another format is rebuilt."""
HEADER_BYTES = 4096
"""The header's size: one page, so the pixels start page-aligned."""
MAGIC = b"project decoded images\n"
SUFFIX = ".decoded"
SPARE_BYTES = 2**26
"""Space a cache leaves free on its disk (64 MiB): a cache that would fill the disk is not written."""


def resolve_cache_dir(cache_dir: str | os.PathLike | None) -> Path:
    """The cache folder: the argument, else ``$PROJECT_CACHE_DIR``, else ``./cache`` (beside ``./logs``)."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    from_env = os.environ.get(CACHE_DIR_ENV)
    return Path(from_env).expanduser() if from_env else Path("cache")


def digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def cache_path(cache_dir: Path, source: Path, conversion: str) -> Path:
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


class DecodedCache:
    """A checked cache file: :meth:`pixels` are its images (``count`` x ``shape``, uint8), mapped read-only from the
    descriptor its header was checked on. Pickled (to a DataLoader worker that is not forked) it carries the path
    and key, and the worker checks and maps the file itself."""

    def __init__(self, path: Path, key: str, count: int, shape: tuple[int, int, int]) -> None:
        self.path, self.key, self.count, self.shape = path, key, count, tuple(shape)
        self.mapped: Tensor | None = None

    @property
    def nbytes(self) -> int:
        return self.count * math.prod(self.shape)

    def open(self) -> str | None:
        """Check the file and map it; ``None``, or why it cannot serve (missing, another format or key, damaged)."""
        try:
            with self.path.open("rb") as file:  # the mapping outlives the descriptor
                wrong = what_is_wrong(file.read(HEADER_BYTES), os.fstat(file.fileno()).st_size, self)
                region = None if wrong else mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
        except FileNotFoundError:
            return "there is none yet"
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
            wrong = self.open()
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
    try:
        stated = json.loads(start[len(MAGIC) :].split(b"\n", 1)[0])
    except ValueError:
        return "its header is damaged"
    if not isinstance(stated, dict) or stated.get("format") != FORMAT:
        return "it was written in another format"
    if (stated.get("key"), stated.get("count"), stated.get("shape")) != (cache.key, cache.count, list(cache.shape)):
        return "the images or their conversion changed since it was written"
    if size != HEADER_BYTES + cache.nbytes:
        return f"it is damaged: {size:,} bytes where {HEADER_BYTES + cache.nbytes:,} were written (truncated?)"
    return None


class CacheNotWritten(Exception):
    """The cache could not be written (a read-only or full disk): the data is decoded without it."""


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold ``path``'s lock file (beside it) while the block runs: one process at a time checks and builds a cache;
    :class:`CacheNotWritten` where the folder cannot take the lock file. Where the file system has no locks, the
    block runs unlocked (two builds then write the same file, each whole)."""
    try:  # a folder that cannot take a file is found here, before any image is decoded
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as error:
        raise CacheNotWritten(first_line(error)) from None
    try:
        with suppress(OSError):
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # and with it the lock


def build(cache: DecodedCache, chunks: Iterator[Tensor]) -> None:
    """Write the images that ``chunks`` yields (uint8, ``(n, *shape)`` each) into a new cache file; the old one, if
    any, is replaced whole. :class:`CacheNotWritten` when the disk refuses (nothing is left behind); the images' own
    errors (:class:`~project.data.decoding.UndecodableImages`) as they are."""
    folder = cache.path.parent
    for stale in folder.glob(f".{cache.path.name}.*{TEMPORARY_SUFFIX}"):  # a killed build's (we hold the lock)
        stale.unlink(missing_ok=True)
    try:
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as error:
        raise CacheNotWritten(first_line(error)) from None
    needed = HEADER_BYTES + cache.nbytes
    if free_bytes(folder) < needed + SPARE_BYTES:
        raise CacheNotWritten(f"it needs {needed:,} bytes and {free_bytes(folder):,} are free")
    try:
        with written_whole(cache.path) as file:
            file.write(header(cache.key, cache.count, cache.shape))
            for chunk in chunks:
                file.write(memoryview(chunk.contiguous().numpy()).cast("B"))
    except UndecodableImages:
        raise
    except (DiskFullError, UserInputError, OSError) as error:  # full, or the rename refused
        raise CacheNotWritten(first_line(error)) from None


def cached_images(
    paths: list[Path],
    shape: tuple[int, int, int],
    place: tuple[Path, Path, Path, str],
    decode_chunks: Callable[[], Iterator[Tensor]],
) -> DecodedCache | None:
    """The cache of ``paths`` decoded to ``shape``: opened when it is there and right, else built from
    ``decode_chunks()``; ``None`` when it cannot be written (said in one line). ``place`` is the cache folder, the
    source (folder or CSV file) the images come from, the folder their paths start from, and the conversion's
    description."""
    cache_dir, source, folder, conversion = place
    key = cache_key(paths, folder, conversion)
    cache = DecodedCache(cache_path(cache_dir, source, conversion), key, len(paths), shape)
    try:
        with locked(cache.path):
            wrong = cache.open()
            if wrong is None:
                return cache
            rank_zero_info(f"Decoding {len(paths):,} images of {source} into the cache {cache.path} ({wrong})")
            build(cache, decode_chunks())
    except CacheNotWritten as error:
        rank_zero_info(
            f"note: the decoded-image cache cannot be written in {cache_dir} ({error}): the images are decoded "
            f"without it (--data.init_args.cache_dir elsewhere, or --data.init_args.cache false to silence this)"
        )
        return None
    cache.pixels()
    return cache
