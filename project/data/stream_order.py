"""The training order of images read from litdata chunks (``data.stream``), and the chunks a process holds: each
epoch visits the chunks in a seeded random order and shuffles together the items of a window of
:data:`CHUNK_WINDOW` chunks, so each chunk is read whole once per epoch (per process that reads it) and its items
served from memory, as litdata's own shuffle reads them. The order is a :class:`ChunkSampler`, the project's
:class:`~project.data.sampler.ResumableSampler` with another permutation: seeded, started part-way through an epoch
on resume, split across processes (each its own run of the epoch's order: its share of the chunks)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset

from project.data.sampler import Position, ResumableSampler
from project.errors import UserInputError

CHUNK_WINDOW = 4
"""The chunks a process holds at once, whose items one epoch's order shuffles together."""


def chunk_order(chunk_of: Tensor, seed: int, window: int = CHUNK_WINDOW) -> Tensor:
    """One epoch's order of examples whose chunks are ``chunk_of`` (a chunk number per example): the chunks in a
    permutation seeded with ``seed``, cut into windows of ``window`` chunks, the examples of each window in a random
    order of their own, window after window."""
    generator = torch.Generator().manual_seed(seed)
    chunks = chunk_of.unique()
    visited = torch.empty(int(chunks.max()) + 1 if len(chunks) else 0, dtype=torch.int64)
    visited[chunks[torch.randperm(len(chunks), generator=generator)]] = torch.arange(len(chunks))
    windows = visited[chunk_of] // window
    shuffled = torch.randperm(len(chunk_of), generator=generator)
    return shuffled[torch.argsort(windows[shuffled], stable=True)]


class ChunkSampler(ResumableSampler):
    """The order of :func:`chunk_order` for epoch ``e`` (seeded with ``seed + e``), started part-way through as
    :class:`~project.data.sampler.ResumableSampler` starts it; with several processes, each takes its own run of
    that order (padded at its end as :class:`~torch.utils.data.DistributedSampler` pads), so each reads its share
    of the chunks.

    Args:
        dataset: the examples, in the order of ``chunk_of``.
        chunk_of: the chunk each example is read from (:func:`chunk_layout`).
        seed, num_replicas, rank, position: as :class:`~project.data.sampler.ResumableSampler` takes them.
    """

    def __init__(
        self,
        dataset: Dataset,
        chunk_of: Tensor,
        seed: int,
        num_replicas: int = 1,
        rank: int = 0,
        position: Callable[[], Position] | None = None,
    ) -> None:
        super().__init__(dataset, seed, num_replicas, rank, position)
        self.chunk_of = chunk_of

    def __iter__(self) -> Iterator[int]:
        skip = self.resumed()
        order = chunk_order(self.chunk_of, self.seed + self.epoch).tolist()
        if order and len(order) < self.total_size:
            order = (order * -(-self.total_size // len(order)))[: self.total_size]
        mine = order[self.rank * self.num_samples : (self.rank + 1) * self.num_samples]
        return iter(mine[skip:])


def chunk_layout(dataset: Dataset) -> Tensor | None:
    """The chunk each example of ``dataset`` is read from: ``dataset`` is a split as the data module makes it
    (subsets and relabelling over images read from chunks, which say where their chunks start: ``chunk_starts``);
    ``None`` where it is not read from chunks."""
    from project.data.labels import RelabelledTargets
    from project.data.streaming import StreamedImages  # here: streaming imports this module

    positions = torch.arange(len(dataset))
    while not isinstance(dataset, StreamedImages):
        if isinstance(dataset, Subset):
            positions = torch.as_tensor(dataset.indices, dtype=torch.int64)[positions]
        elif not isinstance(dataset, RelabelledTargets):
            return None
        dataset = dataset.dataset
    return torch.searchsorted(dataset.chunk_starts(), positions, right=True) - 1


def held_order(module: Any, sampler: ResumableSampler) -> ResumableSampler:
    """The training sampler of ``module`` (``sampler``, the plain one) where its training split is read from chunks:
    a :class:`ChunkSampler` with the same seed, processes and position."""
    chunk_of = chunk_layout(module.train_set)
    if chunk_of is None:
        return sampler
    return ChunkSampler(
        module.train_set, chunk_of, sampler.seed, sampler.num_replicas, sampler.rank, position=sampler.position
    )


class HeldChunks:
    """The chunks a process holds in memory (the :data:`CHUNK_WINDOW` it used last), each read whole at once.

    Args:
        read: reads chunk ``k``'s items, ``(start, end)``, as litdata gives them (``{"index", "pixels"}`` each).
        starts: where each chunk starts, and the count of items last.
        shape: ``(C, H, W)`` of every image.
        where: where the chunks are, for errors.
    """

    def __init__(self, read: Callable[[int, int], list[Any]], starts: Tensor, shape: tuple[int, ...], where: str):
        self.read, self.starts, self.shape, self.where = read, starts, shape, where
        self.held: OrderedDict[int, Tensor] = OrderedDict()

    def chunk(self, number: int) -> Tensor:
        """Chunk ``number``'s images, ``(n, C, H, W)`` uint8, read whole the first time it is asked for since it was
        last held, each item checked (its index and size)."""
        if number in self.held:
            self.held.move_to_end(number)
            return self.held[number]
        start, end = int(self.starts[number]), int(self.starts[number + 1])
        items, size = self.read(start, end), int(np.prod(self.shape))
        out = np.empty((end - start, size), dtype=np.uint8)
        for row, item in enumerate(items):
            ours = isinstance(item, dict) and set(item) == {"index", "pixels"}
            pixels = item["pixels"] if ours else None
            if pixels is None or item["index"] != start + row or not isinstance(pixels, bytes) or len(pixels) != size:
                raise UserInputError(f"{self.where}: item {start + row} is not the image written there")
            out[row] = np.frombuffer(pixels, dtype=np.uint8)
        if len(items) != end - start:
            raise UserInputError(f"{self.where}: chunk {number} holds {len(items)} images, its index {end - start}")
        self.held[number] = torch.from_numpy(out).view(end - start, *self.shape)
        while len(self.held) > CHUNK_WINDOW:
            self.held.popitem(last=False)
        return self.held[number]

    def pixels_of(self, indices: list[int]) -> Tensor:
        """Some images' uint8 pixels, ``(n, C, H, W)``, in the order of ``indices``."""
        wanted = torch.as_tensor(indices, dtype=torch.int64)
        chunks = torch.searchsorted(self.starts, wanted, right=True) - 1
        out = torch.empty((len(indices), *self.shape), dtype=torch.uint8)
        for number in dict.fromkeys(chunks.tolist()):  # each chunk once, in the order first asked for
            rows = (chunks == number).nonzero().flatten()
            out[rows] = self.chunk(number)[wanted[rows] - self.starts[number]]
        return out
