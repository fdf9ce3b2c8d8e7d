"""What every path's batches share on a CPU: large float batches written into reused memory (the same pixels as a new
tensor, and never a batch still held), and a main process that leaves DataLoader workers their cores while they
decode (its torch threads given back afterwards)."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import write_image_folder
from torch.utils.data import Dataset

from project.data import DecodedImages, ImageFolderDataModule, Loading
from project.data import loading as loading_module
from project.data.in_memory import unit_scaled
from project.data.loading import REUSED_FROM, FloatBatches, cores_left_to_workers, data_loader
from project.data.sampler import ResumableSampler

LARGE = (8, 3, 224, 224)  # 4.6 MiB of float32: reused


@pytest.fixture
def threads():
    """Torch's threads as they were before the test, given back after it."""
    before = torch.get_num_threads()
    yield before
    torch.set_num_threads(before)


def uint8_batch(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_a_batch_converted_into_reused_memory_has_a_new_tensors_pixels():
    floats = FloatBatches()
    assert 4 * torch.Size(LARGE).numel() >= REUSED_FROM
    first = floats.unit_scaled(uint8_batch(LARGE, 0))
    assert torch.equal(first, unit_scaled(uint8_batch(LARGE, 0)))  # every uint8 value: the same float
    address = first.data_ptr()
    del first
    second = floats.unit_scaled(uint8_batch(LARGE, 1))
    assert second.data_ptr() == address  # the memory of the batch let go
    assert torch.equal(second, unit_scaled(uint8_batch(LARGE, 1)))
    shorter = (7, *LARGE[1:])  # an epoch's last batch: in the same memory
    del second
    assert floats.unit_scaled(uint8_batch(shorter, 2)).data_ptr() == address
    small = floats.unit_scaled(uint8_batch((4, 1, 28, 28), 3))  # below REUSED_FROM: a new tensor, as before
    assert torch.equal(small, unit_scaled(uint8_batch((4, 1, 28, 28), 3))) and not floats.arrays[1:]
    assert copy.deepcopy(floats).arrays == []  # a copy (a data module pickled for processes) starts empty


def test_a_batch_or_a_view_of_it_still_held_is_never_written_again():
    floats = FloatBatches(keep=2)
    kept = floats.unit_scaled(uint8_batch(LARGE, 0))
    view = floats.unit_scaled(uint8_batch(LARGE, 1))[3]  # the batch is gone, its view is not
    third = floats.unit_scaled(uint8_batch(LARGE, 2))  # both held, no more kept: new memory
    addresses = {kept.data_ptr(), view.data_ptr() - 3 * view.numel() * 4, third.data_ptr()}
    assert len(addresses) == 3
    assert torch.equal(kept, unit_scaled(uint8_batch(LARGE, 0)))
    assert torch.equal(view, unit_scaled(uint8_batch(LARGE, 1))[3])
    del kept  # the negative control: let go, it is used again
    assert floats.unit_scaled(uint8_batch(LARGE, 3)).data_ptr() in addresses


@pytest.mark.parametrize("path", ["from the cache", "through DataLoader workers"])
def test_batches_in_reused_memory_are_the_in_memory_paths_one_by_one(path, tmp_path, monkeypatch):
    """Every batch compared as a training step takes it, then let go: a batch gathered ahead into memory still in use
    would show here."""
    monkeypatch.setattr(loading_module, "REUSED_FROM", 0)  # these small batches reused too
    root = write_image_folder(tmp_path / "images", {"a": 20, "b": 20, "c": 20})
    cache = DecodedImages(cache_dir=str(tmp_path / "cache"))

    def module(**kw):
        return ImageFolderDataModule(data_dir=str(root), channels=3, image_size=24, batch_size=4, **kw)

    reused = {
        "from the cache": module(decoded=DecodedImages(cache_dir=str(tmp_path / "cache"), max_memory_mb=0)),
        "through DataLoader workers": module(decoded=DecodedImages(cache=False, max_memory_mb=0),
                                             loading=Loading(in_memory=False, num_workers=1)),
    }[path]  # fmt: skip
    in_memory = module(decoded=cache)
    for data in (in_memory, reused):
        data.setup("fit")
    want = [data for data in (in_memory.on_after_batch_transfer(b, 0) for b in in_memory.train_dataloader())]
    addresses = set()
    count = 0
    for count, (images, targets) in enumerate(reused.on_after_batch_transfer(b, 0) for b in reused.train_dataloader()):
        assert torch.equal(images, want[count][0]) and torch.equal(targets.to(want[count][1].dtype), want[count][1])
        addresses.add(images.data_ptr())
    assert count + 1 == len(want) > len(addresses)  # memory was reused


class _Numbers(Dataset):
    def __len__(self) -> int:
        return 12

    def __getitem__(self, index: int) -> int:
        return index


def test_the_main_process_leaves_the_workers_their_cores_while_a_loader_runs_when_asked(threads, monkeypatch):
    monkeypatch.setattr(loading_module, "available_cores", lambda: 8)
    torch.set_num_threads(8)
    default = data_loader(_Numbers(), 4, ResumableSampler(_Numbers(), seed=0), 2, None, False)
    assert [torch.get_num_threads() for _ in default] == [8, 8, 8]  # off unless asked (data.loading)
    loader = data_loader(_Numbers(), 4, ResumableSampler(_Numbers(), seed=0), 2, None, False, leave_cores=True)
    during = [torch.get_num_threads() for _ in loader]
    assert during == [6, 6, 6] and torch.get_num_threads() == 8  # the 6 cores 2 workers leave; then all 8
    for _ in loader:
        break  # an epoch left part-way: the threads come back when its iterator goes
    assert torch.get_num_threads() == 8
    without = data_loader(_Numbers(), 4, None, 0, None, False, leave_cores=True)  # negative control: no workers
    assert [torch.get_num_threads() for _ in without] == [8, 8, 8]


def test_threads_come_back_when_the_last_of_overlapping_loaders_ends(threads, monkeypatch):
    monkeypatch.setattr(loading_module, "available_cores", lambda: 8)
    torch.set_num_threads(8)
    training, validation = cores_left_to_workers(2), cores_left_to_workers(3)
    training.__enter__()
    assert torch.get_num_threads() == 6
    validation.__enter__()
    assert torch.get_num_threads() == 3  # what the workers of both leave
    training.__exit__(None, None, None)  # ends first: the other still runs
    assert torch.get_num_threads() == 3
    validation.__exit__(None, None, None)
    assert torch.get_num_threads() == 8
