"""The in-memory data path: the same samples, in the same order, as loading images one by one through a
DataLoader, for every data module and label rule; sharded across processes; exact on resume."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import write_image_folder
from PIL import Image

from project.data import (
    CSVRegressionDataModule,
    DecodedImages,
    ImageDataModule,
    ImageFolderDataModule,
    Labels,
    Loading,
    MNISTDataModule,
    RotationDataModule,
    Split,
)
from project.data.in_memory import DeviceBatches
from project.data.sampler import ResumableSampler


def csv_folder(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    with (root / "train.csv").open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["image", "target"])
        for i in range(40):
            Image.new("L", (20, 20), color=i * 6).save(root / f"{i}.png")
            writer.writerow([f"{i}.png", i / 40])
    return root


BUILDERS: dict[str, Callable[[Path, Path], ImageDataModule]] = {
    "mnist": lambda fake, tmp: MNISTDataModule(data_dir=str(fake), batch_size=64, split=Split(val_size=100)),
    "binary rule": lambda fake, tmp: MNISTDataModule(
        data_dir=str(fake), split=Split(val_size=100), labels=Labels(positive_classes=[5, 6])
    ),
    "multilabel rule": lambda fake, tmp: MNISTDataModule(
        data_dir=str(fake),
        split=Split(val_size=100),
        labels=Labels(label_sets={"even": [0, 2, 4, 6, 8], "big": [7, 8, 9]}),
    ),
    "few-shot": lambda fake, tmp: MNISTDataModule(data_dir=str(fake), split=Split(val_size=100, samples_per_class=7)),
    "resized": lambda fake, tmp: MNISTDataModule(data_dir=str(fake), image_size=20, split=Split(val_size=100)),
    "rotation": lambda fake, tmp: RotationDataModule(data_dir=str(fake), max_angle=30.0, split=Split(val_size=100)),
    "image folder": lambda fake, tmp: ImageFolderDataModule(
        data_dir=str(write_image_folder(tmp / "images", {"a": 20, "b": 20, "c": 20})), channels=3, image_size=24
    ),
    "csv regression": lambda fake, tmp: CSVRegressionDataModule(
        data_dir=str(csv_folder(tmp / "csv")), split=Split(val_size=4)
    ),
}


def batches(data: ImageDataModule, split: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The split's batches as the training step gets them (a DataLoader's uint8 images normalised by the hook)."""
    prepared = (data.on_after_batch_transfer(batch, 0) for batch in getattr(data, split)())
    return [(images, torch.as_tensor(targets)) for images, targets in prepared]


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_in_memory_batches_are_the_per_image_paths(name, fake_data_dir, tmp_path):
    fast, slow = (BUILDERS[name](fake_data_dir, tmp_path) for _ in range(2))
    slow.loading = Loading(in_memory=False)
    for data in (fast, slow):
        data.setup("fit")
    assert set(fast.memory) == {"train", "val", "test"} and not slow.memory
    assert isinstance(fast.train_dataloader(), DeviceBatches)
    for split in ("train_dataloader", "val_dataloader", "test_dataloader"):
        expected, got = batches(slow, split), batches(fast, split)
        assert len(got) == len(expected), split
        for (images, targets), (want_images, want_targets) in zip(got, expected, strict=True):
            assert images.dtype == want_images.dtype and torch.equal(images, want_images), split
            assert torch.equal(targets, want_targets.to(targets.dtype)), split


def test_in_memory_batches_are_sharded_across_processes_like_the_sampler(fake_data_dir):
    data = MNISTDataModule(data_dir=str(fake_data_dir), batch_size=32, split=Split(val_size=100))
    data.setup("fit")
    seen = []
    for rank in (0, 1):
        sampler = ResumableSampler(data.train_set, seed=3, num_replicas=2, rank=rank)
        loader = DeviceBatches(data.memory["train"], 32, torch.device("cpu"), sampler)
        seen.append(torch.cat([images.flatten(1) for images, _ in loader]))
    assert len(seen[0]) == len(seen[1]) == 250
    everything = torch.cat(
        [images.flatten(1) for images, _ in DeviceBatches(data.memory["train"], 500, torch.device("cpu"))]
    )
    assert sorted(map(tuple, torch.cat(seen).tolist())) == sorted(map(tuple, everything.tolist()))


def test_data_that_cannot_be_held_in_memory_is_refused_when_asked_for(tmp_path):
    from project.errors import UserInputError

    images = write_image_folder(tmp_path / "images", {"a": 10, "b": 10})
    data = ImageFolderDataModule(
        data_dir=str(images), decoded=DecodedImages(max_memory_mb=0, cache=False), loading=Loading(in_memory=True)
    )
    with pytest.raises(
        UserInputError, match=r"data\.loading\.in_memory: ImageFolderDataModule's data cannot be held in memory"
    ):
        data.setup("fit")
    data = ImageFolderDataModule(data_dir=str(images), decoded=DecodedImages(max_memory_mb=0, cache=False))
    data.setup("fit")
    assert not data.memory  # decoded again on each access, through a DataLoader
    data = ImageFolderDataModule(
        data_dir=str(images), decoded=DecodedImages(max_memory_mb=0), loading=Loading(in_memory=True)
    )
    data.setup("fit")
    assert {split.rows is not None for split in data.memory.values()} == {True}  # drawn by index from its cache
