"""How a data module's batches are loaded (``data.loading``: :class:`Loading`), the DataLoader of the path that
reads examples one by one, and two things every path's batches share on a CPU: the cores the main process leaves
to DataLoader workers (:func:`cores_left_to_workers`) and the reused memory that large float batches are written into
(:class:`FloatBatches`)."""

from __future__ import annotations

import math
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from project.data.cores import available_cores
from project.data.sampler import ResumableDataLoader, ResumableSampler
from project.errors import UserInputError

REUSED_FROM = 4 << 20
"""Float batches of this many bytes or more are written into reused memory (:class:`FloatBatches`): smaller ones are
reused by the C library's allocator already, larger ones (above 32 MiB on glibc) come from the system afresh each
time, and memory written for the first time costs more than the conversion itself."""


@dataclass(frozen=True)
class Loading:
    """How batches are loaded: ``--data.loading.in_memory false`` (a piece of every data module's arguments,
    checked when it is built). None of it changes what is trained on, so a resumed run may change ``num_workers``
    and ``eval_batch_size``.

    Args:
        in_memory: hold every split as tensors on the training device and draw batches by index (the fast path;
            ``num_workers`` then does not apply); image files too large to hold are drawn by index from their cache on
            disk instead (:mod:`project.data.cache`); default: whenever the data can be (see
            :mod:`project.data.in_memory`); ``false``: load examples one by one through a DataLoader.
        num_workers: DataLoader worker processes (the DataLoader path only); default: one per core (shared by this
            machine's training processes) where reading an image decodes a file, none otherwise (the main process
            reads tensors faster than workers could hand them over).
        eval_batch_size: batch size for validation, test and predict (no gradients, so it can be larger).
        leave_cores_to_workers: on the DataLoader path, while workers decode, torch in the main process runs on the
            cores they leave (:func:`cores_left_to_workers`): for work bound by decoding, where the main process's
            spinning threads would take the workers' time (1.5x the images/s on 28x28 PNGs, docs/data_at_scale.md);
            off by default, as a model trained on the CPU needs those threads (a ResNet-18 step on 2 cores took
            1.7x as long with it).
    """

    in_memory: bool | None = None
    num_workers: int | None = None
    eval_batch_size: int = 1000
    leave_cores_to_workers: bool = False

    def __post_init__(self) -> None:
        if self.num_workers is not None and self.num_workers < 0:
            raise UserInputError(f"data.loading.num_workers must be 0 or more, got {self.num_workers}")
        if self.eval_batch_size < 1:
            raise UserInputError(f"data.loading.eval_batch_size must be a positive integer, got {self.eval_batch_size}")


class _Sharing:
    """The loaders iterating now with workers, and the main process's torch threads before the first began."""

    lock = threading.Lock()
    iterating = 0
    threads_before = 0


@contextmanager
def cores_left_to_workers(workers: int) -> Iterator[None]:
    """While the block runs, torch in this process uses only the cores that ``workers`` DataLoader workers leave of
    its own (the fewer of its threads and the cores it may use; at least one): a DDP process whose threads Lightning
    set to its share of the machine leaves that share to its workers. Afterwards, once no other such block runs, it
    has as many threads as before.

    Why: torch's OpenMP threads spin for a while after each operation, waiting for the next, and a main process that
    normalises batches on every core while the workers decode on every core takes the workers' time: an epoch of
    50,000 PNGs on 2 cores took 2.98 s with 2 threads in the main process against 1.80 s with 1. Setting
    ``OMP_WAIT_POLICY=PASSIVE`` would cure it too, but only in the environment before torch is imported, and for every
    operation of the process, a training step's included (threads that spin take the next operation sooner). Blocks
    may nest and overlap (training and validation loaders): the threads go back when the last ends."""
    if workers == 0:
        yield
        return
    with _Sharing.lock:
        if _Sharing.iterating == 0:
            _Sharing.threads_before = torch.get_num_threads()
        _Sharing.iterating += 1
        torch.set_num_threads(max(1, min(torch.get_num_threads(), available_cores()) - workers))
    try:
        yield
    finally:
        with _Sharing.lock:
            _Sharing.iterating -= 1
            if _Sharing.iterating == 0:
                torch.set_num_threads(_Sharing.threads_before)


class _CoreSharingLoader(DataLoader):
    """A DataLoader whose iteration leaves the workers their cores (:func:`cores_left_to_workers`)."""

    def __iter__(self) -> Iterator[Any]:
        with cores_left_to_workers(self.num_workers):
            yield from super().__iter__()


class _CoreSharingResumableLoader(_CoreSharingLoader, ResumableDataLoader):
    """A :class:`~project.data.sampler.ResumableDataLoader` whose iteration leaves the workers their cores."""


def data_loader(
    dataset: Dataset,
    batch_size: int,
    sampler: ResumableSampler | None,
    workers: int,
    collation: Callable[[Any], Any] | None,
    pinned: bool,
    leave_cores: bool = False,
) -> DataLoader:
    """A DataLoader over ``dataset`` (resumable when it follows a ``sampler``): ``workers`` processes kept from
    epoch to epoch, batches made by ``collation`` (``None``: torch's default), in pinned memory when ``pinned``, and
    the workers' seeds drawn from a generator of its own, not from the run's. With ``leave_cores``, while it is
    iterated, the main process's torch threads leave the workers their cores (:func:`cores_left_to_workers`)."""
    if leave_cores:
        loader_class = _CoreSharingResumableLoader if sampler is not None else _CoreSharingLoader
    else:
        loader_class = ResumableDataLoader if sampler is not None else DataLoader
    return loader_class(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        persistent_workers=workers > 0,
        collate_fn=collation,
        pin_memory=pinned,
        generator=torch.Generator(),
    )


def _references(arrays: list[Any], index: int) -> int:
    return sys.getrefcount(arrays[index])


class FloatBatches:
    """Float32 batches written into memory that is used again, for batches of :data:`REUSED_FROM` bytes or more on a
    CPU: converting a batch of 256 224x224 RGB images to float32 took 187 µs an image into a new tensor and 45 µs into
    memory written before (a new tensor of 154 MB is new pages from the system, each first written at a cost).

    A buffer is handed out as a tensor over a NumPy array (``torch.from_numpy``), which every tensor and view made from
    it keeps alive; it is written again only when nothing but this object holds the array (its reference count). So
    a batch that a caller keeps (a list of batches, a view of one) is never overwritten: a new buffer is made instead,
    up to ``keep`` of them, then new memory each time. The pixels are those of a new tensor (``torch.equal``)."""

    def __init__(self, keep: int = 4) -> None:
        self.keep = keep
        self.arrays: list[Any] = []
        self.lock = threading.Lock()  # the cache path converts in a thread of its own
        self.arrays.append(torch.empty(0).numpy())  # how many references a free array has, counted the same way
        self.free = _references(self.arrays, 0)
        self.arrays.clear()

    def __getstate__(self) -> dict[str, int]:  # a copy (a data module's, pickled for processes) starts empty
        return {"keep": self.keep}

    def __setstate__(self, state: dict[str, int]) -> None:
        self.__init__(state["keep"])

    def empty(self, shape: tuple[int, ...]) -> Tensor:
        """An uninitialised float32 tensor of ``shape`` on the CPU, in a free buffer where one is large enough."""
        count = math.prod(shape)
        if count * 4 < REUSED_FROM:
            return torch.empty(shape)
        with self.lock:
            free = [i for i in range(len(self.arrays)) if _references(self.arrays, i) <= self.free]
            fitting = [i for i in free if self.arrays[i].size >= count]
            if fitting:
                array = self.arrays[fitting[0]]
            elif len(self.arrays) < self.keep or free:
                if free:  # too small for this batch: replaced by one that fits
                    del self.arrays[free[0]]
                array = torch.empty(count).numpy()
                self.arrays.append(array)
            else:
                return torch.empty(shape)
            return torch.from_numpy(array[:count].reshape(shape))

    def unit_scaled(self, pixels: Tensor) -> Tensor:
        """Pixels as float32 on the 0..1 scale, the values :func:`~project.data.in_memory.unit_scaled` gives, in a
        tensor of their own: uint8 on a CPU written into reused memory where the batch is large."""
        if pixels.dtype != torch.uint8:  # floats: as they are, in a tensor of their own
            return pixels.to(torch.float32, copy=True)
        if pixels.device.type != "cpu" or pixels.numel() * 4 < REUSED_FROM:  # as unit_scaled makes them
            return pixels.to(torch.float32).div_(255)
        return self.empty(tuple(pixels.shape)).copy_(pixels).div_(255)
