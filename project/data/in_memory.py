"""The in-memory data path: a split held as tensors on the training device, batches drawn by index.

A split that fits is decoded once into uint8 (or, for arrays, float) pixels ``(N, C, H, W)`` and its targets; both
move to the training device once. Each batch is then a gather of rows by index (in the resumable sampler's order for
training, in order for evaluation), on the device: no per-image Python, no host-to-device copy per batch, no
DataLoader workers. The order and the pixels are the same as the per-image path's, and so is what follows: the data
module augments and normalises every path's batches of pixels in one place
(:meth:`~project.data.ImageDataModule.on_after_batch_transfer`, with :func:`normalised`).

Data too large to hold takes the same path from a cache on disk (:mod:`project.data.cache`): its pixels stay in the
memory-mapped file, and each batch's rows are gathered there and copied to the device, one batch ahead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset

from project.data.labels import RelabelledTargets
from project.data.loading import FloatBatches
from project.data.sampler import ResumableSampler, check_same_shuffle_seed


class SplitTensors(NamedTuple):
    """A split as tensors: pixels (N, C, H, W) and the targets of the same N examples.

    Pixels are uint8 (0..255, scaled by 1/255 when drawn) or floating point (taken as they are: images already
    scaled, to [0, 1] for predictions of new image files to match); see :func:`unit_scaled`. With ``rows``, the
    pixels are a larger array that stays where it is (a memory-mapped cache on disk, :mod:`project.data.cache`) and
    example ``i`` is its row ``rows[i]``: a subset picks rows, and batches gather them one batch at a time.
    """

    pixels: Tensor
    targets: Tensor
    rows: Tensor | None = None

    def take(self, indices: list[int] | Tensor) -> SplitTensors:
        index = torch.as_tensor(indices, dtype=torch.long)
        if self.rows is not None:
            return SplitTensors(self.pixels, self.targets[index], self.rows[index])
        return SplitTensors(self.pixels[index], self.targets[index])


def unit_scaled(pixels: Tensor, copy: bool = True) -> Tensor:
    """Pixels as float32 on the scale the normalisation applies to: uint8 divided by 255 (a new tensor), floating
    point as given (a new tensor too, which the caller may change in place, unless ``copy=False``: then float32 pixels
    are the tensor itself, for a caller that owns them)."""
    if pixels.dtype == torch.uint8:  # one new tensor, divided in place: fresh memory is costly on a CPU
        return pixels.to(torch.float32).div_(255)
    return pixels.to(torch.float32, copy=copy)


def normalised(pixels: Tensor, mean: Tensor, std: Tensor, copy: bool = True) -> Tensor:
    """Pixels as the network takes them, the one rule of every path (in memory, DataLoader, prediction, export's
    ``config.json``): :func:`unit_scaled`, minus ``mean``, over ``std``, per channel (shaped ``(C, 1, 1)`` or
    ``(1, C, 1, 1)``), as torchvision's ``ToTensor`` and ``Normalize`` do. ``copy=False``: float32 pixels of the
    caller's own (a batch) are normalised in place."""
    return unit_scaled(pixels, copy).sub_(mean).div_(std)


class TensorImages(Dataset):
    """A dataset the in-memory path can hold whole: :meth:`tensors` gives its pixels and targets at once.

    The base :meth:`~project.data.ImageDataModule.leaf_tensors` asks datasets of this class (and no other) for their
    tensors; a dataset of another class goes through a DataLoader, one example at a time.
    """

    def tensors(self) -> SplitTensors | None:
        """Every example's pixels and targets, or ``None`` when they are not held (too big to keep)."""
        raise NotImplementedError


class PixelTensors(TensorImages):
    """Images held as tensors (a :class:`SplitTensors`): whole, for the in-memory path, or one example at a time, its
    pixels as they are held (the DataLoader path), as every path hands them to the data module."""

    def __init__(self, split: SplitTensors) -> None:
        self.split = split
        self.targets = split.targets

    def __len__(self) -> int:
        return len(self.split.targets)

    def __getitem__(self, index: int) -> tuple[Tensor, Any]:
        target = self.split.targets[index]
        return self.split.pixels[index], target.item() if target.ndim == 0 else target

    def tensors(self) -> SplitTensors:
        return self.split


class DeviceBatches:
    """``(pixels, targets)`` batches from a :class:`SplitTensors` on ``device``, like a DataLoader's: each a tensor of
    its own, which the data module may change in place.

    With a ``sampler`` (training) the batches follow its order, which resumes part-way through an epoch; without
    one they go through the split in order. Pixels held in memory move to the device once; pixels left on disk
    (``rows``) are gathered a batch at a time by a thread, one batch ahead of the one being trained on, and copied to
    the device (through pinned memory on a GPU).
    """

    def __init__(
        self, split: SplitTensors, batch_size: int, device: torch.device, sampler: ResumableSampler | None = None
    ) -> None:
        if split.rows is None:
            split = SplitTensors(split.pixels.to(device), split.targets.to(device))
        self.split = split
        self.device = device
        self.batch_size = batch_size
        self.order = sampler  # not "sampler": Lightning would take this for a DataLoader
        self.floats = FloatBatches()

    def __len__(self) -> int:
        count = len(self.order) if self.order is not None else len(self.split.targets)
        return -(-count // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        device = self.split.targets.device
        if self.order is not None:
            order = torch.tensor(list(self.order), dtype=torch.long, device=device)
        else:
            order = torch.arange(len(self.split.targets), device=device)
        if self.split.rows is not None:
            yield from self.gathered(order)
            return
        for start in range(0, len(order), self.batch_size):
            index = order[start : start + self.batch_size]
            yield self.split.pixels[index], self.split.targets[index]

    def gathered(self, order: Tensor) -> Iterator[tuple[Tensor, Tensor]]:
        """The batches of pixels left where they are, each gathered while the one before it is used, into one of two
        buffers in turn (fresh memory each batch cost more than the copy itself here: scripts/benchmark_data.py);
        a buffer is gathered into again only once the batch made from it was copied out of it (:meth:`gather`)."""
        buffers: list[Tensor | None] = [None, None]  # made by the gathering thread: not under inference mode
        batches = [order[start : start + self.batch_size] for start in range(0, len(order), self.batch_size)]
        with ThreadPoolExecutor(max_workers=1) as gatherer:
            ahead = gatherer.submit(self.gather, batches[0], buffers, 0) if batches else None
            for number in range(len(batches)):
                pixels, targets = ahead.result()
                if number + 1 < len(batches):
                    ahead = gatherer.submit(self.gather, batches[number + 1], buffers, (number + 1) % 2)
                yield pixels, targets

    def gather(self, index: Tensor, buffers: list[Tensor | None], slot: int) -> tuple[Tensor, Tensor]:
        """One batch's pixels (gathered into the first rows of ``buffers[slot]``, made on first use) and targets, on
        the device, in a tensor of their own: on a GPU the copy to it, on the CPU the pixels on the 0..1 scale
        (:func:`unit_scaled`'s values, the conversion the batch goes through next anyway, written into reused memory:
        :class:`~project.data.loading.FloatBatches`)."""
        if buffers[slot] is None:
            buffers[slot] = torch.empty((self.batch_size, *self.split.pixels.shape[1:]), dtype=self.split.pixels.dtype)
        pixels = torch.index_select(self.split.pixels, 0, self.split.rows[index], out=buffers[slot][: len(index)])
        targets = self.split.targets[index].to(self.device)
        if self.device.type != "cuda":
            return self.floats.unit_scaled(pixels), targets
        return pixels.pin_memory().to(self.device, non_blocking=True), targets  # pin_memory copies: the buffer is free

    def state_dict(self) -> dict[str, Any]:
        return {"shuffle_seed": self.order.seed} if self.order is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self.order is not None:
            check_same_shuffle_seed(state_dict.get("shuffle_seed"), self.order.seed)


def memory_splits(
    splits: dict[str, Dataset | None], leaf_tensors: Callable[[Dataset], SplitTensors | None]
) -> dict[str, SplitTensors]:
    """The splits that can be held in memory, as tensors: a split's subsets and label rules are applied to the
    tensors of the dataset under them (``leaf_tensors``, computed once for the splits that share it)."""
    leaves: dict[int, SplitTensors | None] = {}

    def tensors_of(dataset: Dataset) -> SplitTensors | None:
        if isinstance(dataset, RelabelledTargets | Subset):
            inner = tensors_of(dataset.dataset)
            if inner is None:
                return None
            if isinstance(dataset, Subset):
                return inner.take(dataset.indices)
            return SplitTensors(inner.pixels, dataset.rule.apply(inner.targets), inner.rows)
        if id(dataset) not in leaves:
            leaves[id(dataset)] = leaf_tensors(dataset)
        return leaves[id(dataset)]

    held = {name: tensors_of(dataset) for name, dataset in splits.items() if dataset is not None}
    return {name: tensors for name, tensors in held.items() if tensors is not None}
