"""Decoded images on disk: a folder's or a CSV's images decoded once, then read back by index in every later epoch
and every later run, whatever their number (the data-at-any-size path; docs/data_at_scale.md).

A cache file is one page of header (JSON: the format, the key, the number and shape of the images) followed by the
images' uint8 pixels, ``(N, C, H, W)`` in the order of the dataset's files. Its **name** says which images and which
conversion it holds (the source's folder name and a hash of its resolved path and the conversion), so that when the
files change the new cache replaces the old one instead of piling up beside it; its **key** (a hash of every file's
path, size and modification time, the conversion and the decoders' versions) says whether it still holds them.

Written whole or not at all (:func:`project.files.atomic.written_whole`: a temporary file renamed over the name), and
checked when opened (format, key, shape, and a size that is exactly header + pixels, so a truncated file is seen):
a cache that does not match is rebuilt. A cache that cannot be written (a read-only folder, a full disk) is one
line on the console, and the data is decoded as it was before the cache existed. Reading maps the file into memory
(copy-on-write: nothing is ever written back): the operating system's page cache holds what was read, the process
does not, and a batch is a gather of rows by index.
"""

from __future__ import annotations

import hashlib
import json
import math
import mmap
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import PIL
import torch
import torchvision
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from project.data.decoding import ImageConversion
from project.errors import DiskFullError, first_line
from project.files.atomic import free_bytes, written_whole

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
    """Where the cache of ``source``'s images under ``conversion`` (its description) lives."""
    name = "".join(c if c.isalnum() or c in "-_" else "_" for c in source.stem)[:40] or "images"
    return cache_dir / f"{name}-{digest(str(source.resolve()), conversion)[:16]}{SUFFIX}"


def cache_key(paths: Iterable[Path], conversion: str) -> str | None:
    """What the cache must have been built from: each file's path, size and modification time (nanoseconds), the
    conversion, and the versions of the code that decodes and resizes (PIL, torchvision); ``None`` when a file cannot
    be found (decoding names every such file)."""
    files = hashlib.sha256()
    for path in paths:
        try:
            status = path.stat()
        except OSError:
            return None
        files.update(f"{path}\0{status.st_size}\0{status.st_mtime_ns}\n".encode())
    return digest(f"format {FORMAT}", conversion, PIL.__version__, torchvision.__version__, files.hexdigest())


class DecodedCache:
    """An opened cache file: :meth:`pixels` maps its images (``count`` x ``shape``, uint8) on first use in each
    process. Pickled (to a DataLoader worker) it carries the path only, and the worker maps the file itself."""

    def __init__(self, path: Path, count: int, shape: tuple[int, int, int]) -> None:
        self.path, self.count, self.shape = path, count, tuple(shape)
        self.mapped: Tensor | None = None

    @property
    def nbytes(self) -> int:
        return self.count * math.prod(self.shape)

    def pixels(self) -> Tensor:
        """The images, ``(count, C, H, W)`` uint8, mapped from the file (read on access, not loaded)."""
        if self.mapped is None:
            with self.path.open("rb") as file:  # the mapping outlives the descriptor
                region = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_COPY)
            flat = torch.frombuffer(region, dtype=torch.uint8, count=self.nbytes, offset=HEADER_BYTES)
            self.mapped = flat.view(self.count, *self.shape)
        return self.mapped

    def load(self) -> Tensor:
        """The images read into memory (for data small enough to be held: the in-memory path)."""
        return self.pixels().clone()

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "count": self.count, "shape": self.shape, "mapped": None}


def header(key: str, count: int, shape: tuple[int, int, int]) -> bytes:
    text = json.dumps({"format": FORMAT, "key": key, "count": count, "shape": list(shape), "dtype": "uint8"})
    return (MAGIC + text.encode() + b"\n").ljust(HEADER_BYTES, b" ")


def what_is_wrong(path: Path, key: str, count: int, shape: tuple[int, int, int]) -> str | None:
    """Why the cache at ``path`` cannot serve (``None``: it can): missing, another format or key, or damaged."""
    try:
        with path.open("rb") as file:
            start = file.read(HEADER_BYTES)
            size = os.fstat(file.fileno()).st_size
    except FileNotFoundError:
        return "there is none yet"
    except OSError as error:
        return f"it cannot be read ({first_line(error)})"
    if not start.startswith(MAGIC):
        return "it is not a cache file of this project"
    try:
        stated = json.loads(start[len(MAGIC) :].split(b"\n", 1)[0])
    except ValueError:
        return "its header is damaged"
    if not isinstance(stated, dict) or stated.get("format") != FORMAT:
        return "it was written in another format"
    if stated.get("key") != key or stated.get("count") != count or stated.get("shape") != list(shape):
        return "the images or their conversion changed since it was written"
    expected = HEADER_BYTES + count * math.prod(shape)
    if size != expected:
        return f"it is damaged: {size:,} bytes where {expected:,} were written (truncated?)"
    return None


class CacheNotWritten(Exception):
    """The cache could not be written (a read-only or full disk): the data is decoded without it."""


def build(path: Path, key: str, shape: tuple[int, int, int], chunks: Iterator[Tensor], count: int) -> DecodedCache:
    """Write the images that ``chunks`` yields (uint8, ``(n, *shape)`` each, ``count`` in all) into a new cache at
    ``path``; :class:`CacheNotWritten` when the disk refuses (nothing is left behind), any other error as it is."""
    needed = HEADER_BYTES + count * math.prod(shape)
    try:  # a folder that cannot take a file is found before any image is decoded
        path.parent.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path.parent).close()
    except OSError as error:
        raise CacheNotWritten(first_line(error)) from None
    if free_bytes(path.parent) < needed + SPARE_BYTES:
        raise CacheNotWritten(f"it needs {needed:,} bytes and {free_bytes(path.parent):,} are free")
    try:
        with written_whole(path) as file:
            file.write(header(key, count, shape))
            for chunk in chunks:
                file.write(memoryview(chunk.contiguous().numpy()).cast("B"))
    except (DiskFullError, OSError) as error:  # the images' own errors (UserInputError) go on as they are
        raise CacheNotWritten(first_line(error)) from None
    return DecodedCache(path, count, shape)


def cache_is_ready(cache_dir: Path, source: Path, conversion: ImageConversion, paths: list[Path]) -> bool:
    """Whether the cache of ``paths`` (from ``source``) under ``conversion`` is there and right, so that opening it
    decodes nothing."""
    description = conversion.description
    key = cache_key(paths, description)
    path = cache_path(cache_dir, source, description)
    return key is not None and what_is_wrong(path, key, len(paths), conversion.shape) is None


def cached_images(
    paths: list[Path],
    shape: tuple[int, int, int],
    place: tuple[Path, Path, str],
    decode_chunks: Callable[[], Iterator[Tensor]],
) -> DecodedCache | None:
    """The cache of ``paths`` decoded to ``shape``: opened when it is there and right, else built from
    ``decode_chunks()``; ``None`` when it cannot be written (said in one line). ``place`` is the cache folder, the
    source (folder or CSV file) the images come from, and the conversion's description."""
    cache_dir, source, conversion = place
    path = cache_path(cache_dir, source, conversion)
    key = cache_key(paths, conversion)
    if key is None:
        return None
    wrong = what_is_wrong(path, key, len(paths), shape)
    if wrong is None:
        return DecodedCache(path, len(paths), shape)
    rank_zero_info(f"Decoding {len(paths):,} images of {source} into the cache {path} ({wrong})")
    try:
        return build(path, key, shape, decode_chunks(), len(paths))
    except CacheNotWritten as error:
        rank_zero_info(
            f"note: the decoded-image cache cannot be written in {cache_dir} ({error}): the images are decoded "
            f"without it (--data.init_args.cache_dir elsewhere, or --data.init_args.cache false to silence this)"
        )
        return None
