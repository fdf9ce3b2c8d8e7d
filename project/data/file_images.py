"""Images from files, decoded once when the data is set up: every file that cannot be decoded is named before
training starts, and later epochs decode nothing where they can help it.

Where the decoded pixels go, by size (``data.decoded.max_memory_mb``) and ``data.decoded.cache``
(:class:`DecodedImages`):

- **a cache on disk** (:mod:`project.data.cache`, the default): decoded into it at the first run (on every core),
  opened as it is by later runs. Data that fits in ``max_memory_mb`` is then read into memory (the in-memory path);
  larger data is gathered from the memory-mapped file by index, batch by batch;
- **no cache** (``cache: false``, or a cache that cannot be written): decoded at setup, kept in memory when it fits;
  larger data is decoded again, file by file, each time an image is read (a DataLoader, on
  ``data.loading.num_workers`` processes, by default one per core).
"""

from __future__ import annotations

import math
from collections.abc import Generator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from project.data.batches import ExampleBatch
from project.data.cache import DecodedCache, cached_images, resolve_cache_dir
from project.data.cores import available_cores
from project.data.decoding import ImageConversion, UndecodableImage, undecodable
from project.data.in_memory import SplitTensors, TensorImages
from project.errors import UserInputError

CHUNK = 256
"""Images decoded per piece at setup: what one worker hands back at a time."""
PARALLEL_FROM = 2048
"""Fewer images than this are decoded in the main process (starting workers costs more than it saves)."""


@dataclass(frozen=True)
class DecodedImages:
    """Where a folder's or a CSV's decoded images are kept: ``--data.decoded.max_memory_mb 0`` (a piece of the
    arguments of the modules that read image files, checked when it is built). None of it changes the pixels, so a
    resumed run may change any of it.

    Args:
        max_memory_mb: keep the decoded images of a split in memory up to this size (MiB); larger splits are read
            from the cache on disk (or, without one, decoded again each time an image is read).
        cache: keep the decoded images in a cache file on disk, reused by later epochs and later runs and rebuilt
            when a file or the conversion changes (:mod:`project.data.cache`); ``false``: none is written.
        cache_dir: the cache's folder; default ``$PROJECT_CACHE_DIR``, else ``./cache``.
        cache_shared: the cache folder is shared with people you trust: open the cache files other users wrote in
            it (their pixels are what you train on). Otherwise a cache file is used only when it is yours and no one
            else may write it; another user's is left alone, and yours is kept in ``cache_dir/user-<uid>``.
    """

    max_memory_mb: int = 4096
    cache: bool = True
    cache_dir: str | None = None
    cache_shared: bool = False

    def __post_init__(self) -> None:
        if self.max_memory_mb < 0:
            raise UserInputError(f"data.decoded.max_memory_mb must be 0 or more, got {self.max_memory_mb}")

    @property
    def folder(self) -> Path | None:
        """The cache's folder, or ``None``: no cache."""
        return resolve_cache_dir(self.cache_dir) if self.cache else None


class _DecodedPieces(Dataset):
    """The work the processes share while a split is decoded: piece ``k`` is files ``k * CHUNK`` to
    ``(k + 1) * CHUNK``, decoded into one tensor (one transfer from a worker, not one per image), with the reasons
    of those that could not be decoded (and no tensor when there are any)."""

    def __init__(self, paths: list[Path], conversion: ImageConversion) -> None:
        self.paths, self.conversion = paths, conversion

    def __len__(self) -> int:
        return -(-len(self.paths) // CHUNK)

    def __getitem__(self, piece: int) -> tuple[Tensor | None, list[str]]:
        decoded, broken = [], []
        for path in self.paths[piece * CHUNK : (piece + 1) * CHUNK]:
            try:
                decoded.append(self.conversion.decode(path))
            except UndecodableImage as error:
                broken.append(str(error))
        return (None if broken else torch.stack(decoded)), broken


def _as_is(piece: Any) -> Any:
    return piece


def _decoded_chunks(paths: list[Path], conversion: ImageConversion) -> Generator[Tensor, None, None]:
    """Every file decoded, in order, :data:`CHUNK` images at a time, on every core for a large split; after the
    last, one :class:`UserInputError` names every file that cannot be decoded (and no chunk is given after the
    first such file)."""
    workers = available_cores() if len(paths) >= PARALLEL_FROM else 0
    loader = DataLoader(
        _DecodedPieces(paths, conversion),
        batch_size=None,  # each item is a piece already
        num_workers=workers,
        collate_fn=_as_is,
        generator=torch.Generator(),  # its seed drawn from here: the run's generators are left as they were
    )
    broken: list[str] = []
    for pixels, reasons in loader:
        broken += reasons
        if not broken:
            yield pixels
    if broken:
        raise undecodable(broken)


class FileImages(TensorImages):
    """Images from files with their targets (a tensor of class indices, values or 0/1 labels), decoded once. An
    example is the image's uint8 pixels and its target; the data module normalises them, whole batches at a time.

    Args:
        paths, targets: the files and their targets, in the dataset's order.
        conversion: what each file is decoded to.
        max_bytes: decoded pixels up to this size are held in memory.
        cache: the cache folder, the source the files come from (the folder or the CSV: it names the cache), the
            folder their paths start from, and whether the cache folder is shared (its other users' cache files are
            trusted: :func:`~project.data.cache.cached_images`); ``None``: no cache.
    """

    def __init__(
        self,
        paths: list[Path],
        targets: Tensor,
        conversion: ImageConversion,
        max_bytes: int,
        cache: tuple[Path, Path, Path, bool] | None = None,
    ) -> None:
        self.paths, self.targets, self.conversion = paths, targets, conversion
        fits = len(paths) * math.prod(conversion.shape) <= max_bytes
        self.cache: DecodedCache | None = None
        if cache is not None:
            cache_dir, source, folder, shared = cache
            place = (cache_dir, source, folder, conversion.description)
            decode = partial(_decoded_chunks, paths, conversion)
            self.cache = cached_images(paths, conversion.shape, place, decode, shared)
        if self.cache is not None:
            self.held = self.cache.load() if fits else None
        else:
            chunks = [chunk if fits else None for chunk in _decoded_chunks(paths, conversion)]  # all decoded: checked
            self.held = torch.cat(chunks) if fits else None

    @property
    def decodes_on_access(self) -> bool:
        """Whether reading an image decodes its file (neither held nor cached): what DataLoader workers are for."""
        return self.held is None and self.cache is None

    def __len__(self) -> int:
        return len(self.paths)

    def tensors(self) -> SplitTensors | None:
        """The decoded images and targets: held in memory, or mapped from the cache (``rows``: gathered batch by
        batch); ``None`` when they are decoded on access."""
        if self.held is not None:
            return SplitTensors(self.held, self.targets)
        if self.cache is not None:
            return SplitTensors(self.cache.pixels(), self.targets, torch.arange(len(self.paths)))
        return None

    def __getitems__(self, indices: list[int]) -> ExampleBatch:
        """Many examples at once, as a DataLoader asks for them: their images gathered into one tensor
        (:class:`~project.data.batches.ExampleBatch`), their targets as the default collation would make them."""
        images, targets = self.pixels_of(indices), self.targets[indices]
        examples = [(image, _plain_target(target)) for image, target in zip(images, targets, strict=True)]
        if targets.ndim == 1:  # numbers, which the default collation makes int64 or float64
            targets = targets.to(torch.float64 if targets.is_floating_point() else torch.int64)
        return ExampleBatch(examples, images, targets)

    def pixels_of(self, indices: list[int]) -> Tensor:
        """Some images' uint8 pixels, ``(n, C, H, W)``, a tensor of their own: gathered (a copy) from those held or
        from the cache (read-only), or decoded now."""
        if self.held is not None:
            return self.held[indices]
        if self.cache is not None:
            return self.cache.pixels()[indices]
        return torch.stack([self.conversion.decode(self.paths[index]) for index in indices])

    def __getitem__(self, index: int) -> tuple[Tensor, Any]:
        """An image's uint8 pixels and its target: a DataLoader carries uint8 (a quarter of the bytes of floats),
        and the data module normalises whole batches on the training device (``on_after_batch_transfer``)."""
        return self.pixels_of([index])[0], _plain_target(self.targets[index])


def _plain_target(target: Tensor) -> Any:
    """An example's target as the dataset gives it: a number, or a tensor of labels."""
    return target.item() if target.ndim == 0 else target
