"""Data at any size: image folders and CSVs decoded once into a cache on disk, then read back by index (the same
pixels, order and targets as the in-memory and DataLoader paths; exact resume; sharded), a cache rebuilt when a file
changes or it is damaged, one line and the decoding path when it cannot be written; torchvision's decoder where it
gives PIL's pixels; DataLoader workers chosen for the machine."""

from __future__ import annotations

import csv
import gc
import logging
import multiprocessing
import os
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_image_folder
from helpers import Interrupted
from PIL import Image
from test_arrays import EXACT_RESUME_SETTINGS
from test_reliability import assert_same_training_state
from torch.utils.data import DataLoader

from project.cli import run_cli
from project.data import (
    CSVMultilabelDataModule,
    CSVRegressionDataModule,
    DecodedImages,
    ImageFolderDataModule,
    Labels,
    Loading,
    Split,
    file_images,
)
from project.data import cache as cache_module
from project.data.cache import HEADER_BYTES, MAGIC, SUFFIX, TEMPORARY_SUFFIX
from project.data.cores import available_cores
from project.data.decoding import ImageConversion
from project.data.in_memory import DeviceBatches
from project.data.sampler import ResumableSampler
from project.errors import UserInputError

SPLITS = ("train_dataloader", "val_dataloader", "test_dataloader")


@pytest.fixture(autouse=True)
def console(caplog):
    """What the data modules say on the console (Lightning's rank-zero logger)."""
    caplog.set_level(logging.INFO)
    return caplog


def write_csv(root: Path, columns: list[str], rows: int = 36, test: bool = False) -> Path:
    """``root/train.csv`` (and ``test.csv``) naming small greyscale PNGs, with values for ``columns``."""
    root.mkdir(parents=True, exist_ok=True)
    for name in ("train", "test") if test else ("train",):
        with (root / f"{name}.csv").open("w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["image", *columns])
            for i in range(rows):
                image = f"{name}_{i}.png"
                Image.new("L", (16, 16), color=(i * 7) % 256).save(root / image)
                writer.writerow([image, *((i >> k) & 1 if len(columns) > 1 else i / rows for k in range(len(columns)))])
    return root


def cache_files(folder: Path) -> list[Path]:
    return sorted(folder.glob(f"*{SUFFIX}"))


def written(folder: Path) -> list[Path]:
    """What a build left in the cache folder: cache files and temporary files (the lock files are not written to)."""
    return [path for path in folder.iterdir() if not path.name.endswith(".lock")]


def batches(data, split: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The split's batches as the training step gets them (a DataLoader's uint8 images normalised by the hook)."""
    prepared = (data.on_after_batch_transfer(batch, 0) for batch in getattr(data, split)())
    return [(images, torch.as_tensor(targets)) for images, targets in prepared]


def images_of(data, split: str) -> torch.Tensor:
    return torch.cat([images for images, _ in batches(data, split)])


BUILDERS = {
    "folder, multiclass, few-shot": lambda root, **kw: ImageFolderDataModule(
        data_dir=str(write_image_folder(root, {"a": 20, "b": 20, "c": 20})), channels=3, image_size=24,
        split=Split(samples_per_class=12), **kw),
    "folder, binary, train and test folders": lambda root, **kw: ImageFolderDataModule(
        data_dir=str(write_image_folder(root / "test", {"no": 8, "yes": 8}).parent
                     if write_image_folder(root / "train", {"no": 20, "yes": 20}) else root), **kw),
    "folder, only some classes": lambda root, **kw: ImageFolderDataModule(
        data_dir=str(write_image_folder(root, {"a": 15, "b": 15, "c": 15})), labels=Labels(only_classes=[2, 0]), **kw),
    "csv regression": lambda root, **kw: CSVRegressionDataModule(
        data_dir=str(write_csv(root, ["target"])), split=Split(val_size=6), **kw),
    "csv multilabel, test csv": lambda root, **kw: CSVMultilabelDataModule(
        data_dir=str(write_csv(root, ["one", "two"], test=True)), image_size=12, split=Split(val_size=6), **kw),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_the_cached_path_gives_the_in_memory_and_per_image_paths_batches(name, tmp_path):
    build = BUILDERS[name]
    cache = tmp_path / "cache"
    in_memory = build(tmp_path / "images", decoded=DecodedImages(cache_dir=str(cache)))
    on_disk = build(tmp_path / "images", decoded=DecodedImages(cache_dir=str(cache), max_memory_mb=0))
    per_image = build(
        tmp_path / "images", decoded=DecodedImages(cache=False, max_memory_mb=0), loading=Loading(in_memory=False)
    )
    for data in (in_memory, on_disk, per_image):
        data.setup("fit")
    assert {split.rows is None for split in in_memory.memory.values()} == {True}
    assert set(on_disk.memory) == {"train", "val", "test"}
    assert {split.rows is not None for split in on_disk.memory.values()} == {True}  # left in the file
    assert not per_image.memory and per_image.loader_workers(per_image.train_set) == available_cores()
    for split in SPLITS:
        with torch.inference_mode():  # as the Trainer tests (the gathering thread runs outside it)
            want, cached, decoded = (batches(data, split) for data in (in_memory, on_disk, per_image))
        assert len(want) == len(cached) == len(decoded) > 0, split
        for (images, targets), *others in zip(want, cached, decoded, strict=True):
            for other_images, other_targets in others:
                assert torch.equal(other_images, images) and torch.equal(other_targets.to(targets.dtype), targets)


def test_a_later_run_opens_the_cache_without_decoding_a_file(tmp_path, monkeypatch, console):
    images = write_image_folder(tmp_path / "images", {"a": 10, "b": 10})
    first = ImageFolderDataModule(
        data_dir=str(images), decoded=DecodedImages(cache_dir=str(tmp_path / "cache"), max_memory_mb=0)
    )
    first.setup("fit")
    assert "Decoding 20 images" in console.text and len(cache_files(tmp_path / "cache")) == 1

    def no_decoding(self, path):
        raise AssertionError(f"{path} decoded again")

    monkeypatch.setattr(ImageConversion, "decode", no_decoding)
    console.clear()
    again = ImageFolderDataModule(
        data_dir=str(images), decoded=DecodedImages(cache_dir=str(tmp_path / "cache"), max_memory_mb=0)
    )
    again.setup("fit")
    assert "Decoding" not in console.text
    assert torch.equal(images_of(again, "train_dataloader"), images_of(first, "train_dataloader"))


def test_a_changed_file_rebuilds_the_cache_in_place(tmp_path, console):
    images = write_image_folder(tmp_path / "images", {"a": 10, "b": 10})
    options = {
        "data_dir": str(images),
        "decoded": DecodedImages(cache_dir=str(tmp_path / "cache"), max_memory_mb=0),
        "split": Split(test_size=4),
    }
    ImageFolderDataModule(**options).setup("fit")
    (name,) = cache_files(tmp_path / "cache")
    changed = images / "a" / "3.png"
    Image.new("RGB", (20, 20), color=(250, 0, 0)).save(changed)
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))  # a later time, surely
    console.clear()
    data = ImageFolderDataModule(**options)
    data.setup("fit")
    assert "the images or their conversion changed since it was written" in console.text
    assert cache_files(tmp_path / "cache") == [name]  # replaced, not added beside
    full = data.read_sources[images]
    expected = ImageConversion().decode(changed)
    assert torch.equal(full[full.paths.index(changed)][0], expected)
    ImageFolderDataModule(**options, image_size=20).setup("fit")  # another conversion: another cache beside it
    assert len(cache_files(tmp_path / "cache")) == 2


def test_a_truncated_cache_is_detected_and_rebuilt(tmp_path, console):
    images = write_image_folder(tmp_path / "images", {"a": 10, "b": 10})
    options = {"data_dir": str(images), "decoded": DecodedImages(cache_dir=str(tmp_path / "cache"), max_memory_mb=0)}
    reference = ImageFolderDataModule(**options)
    reference.setup("fit")
    want = torch.cat([x for x, _ in reference.train_dataloader()])
    (path,) = cache_files(tmp_path / "cache")
    size = path.stat().st_size
    os.truncate(path, size - 100)
    console.clear()
    data = ImageFolderDataModule(**options)
    data.setup("fit")
    assert f"it is damaged: {size - 100:,} bytes where {size:,} were written (truncated?)" in console.text
    assert path.stat().st_size == size and torch.equal(torch.cat([x for x, _ in data.train_dataloader()]), want)
    path.write_bytes(b"not a cache")
    console.clear()
    ImageFolderDataModule(**options).setup("fit")
    assert "it is not a cache file of this project" in console.text


def test_a_cache_header_of_deeply_nested_arrays_is_rebuilt_as_damaged(tmp_path, console):
    images = write_image_folder(tmp_path / "images", {"a": 10, "b": 10})
    options = {"data_dir": str(images), "decoded": DecodedImages(cache_dir=str(tmp_path / "cache"), max_memory_mb=0)}
    ImageFolderDataModule(**options).setup("fit")
    (path,) = cache_files(tmp_path / "cache")
    size = path.stat().st_size
    with path.open("r+b") as file:  # json.loads recursed once per "[": a RecursionError traceback
        file.write((MAGIC + b"[" * 2000 + b"]" * 2000 + b"\n").ljust(HEADER_BYTES, b" "))
    console.clear()
    data = ImageFolderDataModule(**options)
    data.setup("fit")
    assert "into the cache" in console.text and "(its header is damaged (nested too deep))" in console.text
    assert path.stat().st_size == size and len(images_of(data, "train_dataloader")) == len(data.train_set)


@pytest.mark.parametrize("where", ["a read-only file system", "a folder that is a file"])
def test_a_cache_that_cannot_be_written_falls_back_to_decoding_with_one_line(where, tmp_path, console):
    images = write_image_folder(tmp_path / "images", {"a": 10, "b": 10})
    if where == "a read-only file system":
        cache_dir = Path("/sys/project-cache")  # read-only for root too (a chmod'ed folder is not: CI runs as root)
        if os.access("/sys", os.W_OK) and not os.path.ismount("/sys"):
            pytest.skip("/sys is writable here")
    else:
        (tmp_path / "file").write_text("")
        cache_dir = tmp_path / "file" / "cache"
    data = ImageFolderDataModule(data_dir=str(images), decoded=DecodedImages(cache_dir=str(cache_dir), max_memory_mb=0))
    data.setup("fit")
    notes = [line for line in console.text.splitlines() if "cannot be written" in line]
    assert len(notes) == 1 and "the images are decoded without it" in notes[0], console.text
    assert not cache_dir.exists() and not data.memory  # decoded on access, through a DataLoader
    assert data.loader_workers(data.train_set) == available_cores()
    plain = ImageFolderDataModule(data_dir=str(images), decoded=DecodedImages(cache=False, max_memory_mb=0))
    plain.setup("fit")
    assert torch.equal(images_of(data, "val_dataloader"), images_of(plain, "val_dataloader"))


def test_a_disk_too_full_for_the_cache_writes_nothing_and_falls_back(tmp_path, monkeypatch, console):
    images = write_image_folder(tmp_path / "images", {"a": 10, "b": 10})
    monkeypatch.setattr(cache_module, "free_bytes", lambda folder: 1000)
    data = ImageFolderDataModule(data_dir=str(images), decoded=DecodedImages(cache_dir=str(tmp_path / "cache")))
    data.setup("fit")
    assert "are free): the images are decoded without it" in console.text
    assert not written(tmp_path / "cache") and set(data.memory) == {"train", "val", "test"}  # held


def test_a_disk_that_fills_while_the_cache_is_written_leaves_no_file(tmp_path, monkeypatch, console):
    images = write_image_folder(tmp_path / "images", {"a": 10, "b": 10})

    def full(chunk):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cache_module, "memoryview", full, raising=False)
    data = ImageFolderDataModule(
        data_dir=str(images), decoded=DecodedImages(cache_dir=str(tmp_path / "cache"), max_memory_mb=0)
    )
    data.setup("fit")
    assert "No space left on device" in console.text and not written(tmp_path / "cache")
    assert len(torch.cat([x for x, _ in data.train_dataloader()])) == len(data.train_set)


def collect_as_outside_pytest() -> None:
    sys.unraisablehook = sys.__unraisablehook__  # as outside pytest: "Exception ignored in" and a traceback
    gc.collect()
    sys.stderr.flush()


def test_a_disk_that_fills_while_workers_decode_the_cache_is_one_note_and_no_traceback(
    tmp_path, monkeypatch, console, capfd
):
    images = write_image_folder(tmp_path / "images", {"a": 20, "b": 20})
    monkeypatch.setattr(file_images, "PARALLEL_FROM", 1)  # decoded by DataLoader workers, 8 images a piece
    monkeypatch.setattr(file_images, "CHUNK", 8)

    def full(chunk):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cache_module, "memoryview", full, raising=False)
    data = ImageFolderDataModule(
        data_dir=str(images), decoded=DecodedImages(cache_dir=str(tmp_path / "cache"), max_memory_mb=0)
    )
    gc.collect()
    gc.disable()  # what the failed build left waits for a collection, which may come in a forked DataLoader worker
    try:
        data.setup("fit")  # the build stops at the first piece; the workers then decode the split again, without it
        # A worker forked now, as a DataLoader forks one (multiprocessing: it drops the parent's exit handlers, such
        # as the removal of an earlier test's temporary folder), collecting: it shuts the build's workers down, or
        # tries to.
        worker = multiprocessing.get_context("fork").Process(target=collect_as_outside_pytest)
        worker.start()
        worker.join()
    finally:
        gc.enable()
    printed = "".join(capfd.readouterr())
    assert "Traceback" not in printed and "can only test a child process" not in printed, printed
    notes = [line for line in console.text.splitlines() if "cannot be written" in line]
    assert len(notes) == 1 and "No space left on device while it was written" in notes[0], console.text
    assert not written(tmp_path / "cache") and data.loader_workers(data.train_set) == available_cores()


def test_images_that_cannot_be_decoded_are_refused_at_setup_and_leave_no_cache(tmp_path):
    images = write_image_folder(tmp_path / "images", {"a": 10, "b": 10})
    (images / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    data = ImageFolderDataModule(data_dir=str(images), decoded=DecodedImages(cache_dir=str(tmp_path / "cache")))
    with pytest.raises(UserInputError, match=r"1 images cannot be decoded: .*broken\.png"):
        data.setup("fit")
    assert not written(tmp_path / "cache")


def test_cached_batches_are_sharded_across_processes_like_the_sampler(tmp_path):
    images = write_image_folder(tmp_path / "images", {"a": 25, "b": 25})
    on_disk = ImageFolderDataModule(
        data_dir=str(images), decoded=DecodedImages(cache_dir=str(tmp_path / "cache"), max_memory_mb=0)
    )
    in_memory = ImageFolderDataModule(data_dir=str(images), decoded=DecodedImages(cache_dir=str(tmp_path / "cache")))
    for data in (on_disk, in_memory):
        data.setup("fit")
    for rank in (0, 1):
        shards = []
        for data in (on_disk, in_memory):
            sampler = ResumableSampler(data.train_set, seed=3, num_replicas=2, rank=rank)
            batches = DeviceBatches(data.memory["train"], 4, torch.device("cpu"), sampler)
            shards.append(torch.cat([data.network_batch(batch, augment=False)[0] for batch in batches]))
        assert len(shards[0]) == 18 and torch.equal(shards[0], shards[1])


def test_dataloader_workers_map_the_cache_themselves(tmp_path):
    images = write_image_folder(tmp_path / "images", {"a": 10, "b": 10})
    data = ImageFolderDataModule(
        data_dir=str(images), decoded=DecodedImages(cache_dir=str(tmp_path / "cache"), max_memory_mb=0)
    )
    data.setup("fit")
    dataset = data.read_sources[images]
    assert dataset.cache.mapped is not None and not dataset.decodes_on_access
    assert data.loader_workers(data.train_set) == 0  # reading a cached image is no work for a worker
    loader = DataLoader(dataset, batch_size=7, num_workers=2)  # each worker is handed the path, not the pixels
    via_workers = torch.cat([images for images, _ in loader])  # uint8, through torch's default collation
    assert via_workers.dtype == torch.uint8 and torch.equal(via_workers, dataset.cache.pixels())
    data.loading = Loading(num_workers=1)  # given: always taken
    assert data.loader_workers(data.train_set) == 1


@pytest.mark.parametrize(
    ("mode", "suffix", "channels"),
    [("L", "png", 1), ("RGB", "png", 3), ("RGB", "jpg", 3), ("L", "jpg", 1), ("RGBA", "png", 3), ("P", "png", 3)],
)
def test_torchvisions_decoder_gives_pils_pixels(mode, suffix, channels, tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    path = tmp_path / f"image.{suffix}"
    picture = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).resize((64, 64))
    picture.convert(mode).save(path, **({"quality": 90} if suffix == "jpg" else {}))
    conversion = ImageConversion(channels=channels, image_size=64)
    direct = conversion.decode(path)
    monkeypatch.setattr("project.data.decoding.decoded_directly", lambda path: None)  # PIL for everything
    assert torch.equal(direct, conversion.decode(path))


AUGMENTED = (
    "[RandomHorizontalFlip, {class_path: RandomRotation, init_args: {degrees: 10}},"
    " {class_path: GaussianBlur, init_args: {kernel_size: 3, sigma: [0.1, 2.0]}}]"
)
"""Transforms with batch versions and one without (the random blur runs per image): both resume exactly."""


@pytest.mark.parametrize(
    "path",
    [
        ["--data.decoded.max_memory_mb=0"],
        ["--data.decoded.cache=false", "--data.decoded.max_memory_mb=0", "--data.loading.num_workers=2"],
    ],
    ids=["from the cache", "through DataLoader workers"],
)
def test_a_run_resumed_mid_epoch_equals_an_uninterrupted_one(path, tmp_path, monkeypatch):
    images = write_image_folder(tmp_path / "images", {"a": 30, "b": 30, "c": 30})
    small = ["--model.network.init_args.width=8", "--model.network.init_args.hidden_size=16"]
    data = ["--data=ImageFolderDataModule", f"--data.data_dir={images}", *path, "--data.batch_size=12",
            f"--data.decoded.cache_dir={tmp_path / 'cache'}", "--data.augment.shift=2",
            f"--data.augment.transforms={AUGMENTED}"]  # fmt: skip
    recipe = tmp_path / "settings.yaml"
    recipe.write_text(__import__("yaml").safe_dump(EXACT_RESUME_SETTINGS))
    args = ["fit", f"--config={recipe}", *data, *small, "--test_after_fit=false"]  # 6 steps per epoch, 12 in all
    for name in ("straight", "resumed"):
        (tmp_path / name).mkdir()
    monkeypatch.chdir(tmp_path / "straight")
    cli = run_cli(args)
    from_file = cli.datamodule.memory["train"].rows is not None if cli.datamodule.memory else False
    assert from_file == (path == ["--data.decoded.max_memory_mb=0"])  # trained from the file, or through workers
    monkeypatch.chdir(tmp_path / "resumed")
    with pytest.raises(Interrupted):  # after step 9; last.ckpt holds step 8, 2 batches into the second epoch
        run_cli([*args, "--trainer.callbacks+=helpers.InterruptAtStep", "--trainer.callbacks.step=9"])
    again = ["--data.decoded.max_memory_mb=4096"] if from_file else []  # held in memory now: the same batches
    run_cli([*args, "--ckpt_path=last", *again])  # through workers: they draw indices before the loop is restored
    last = Path("logs") / "settings" / "version_0" / "checkpoints" / "last.ckpt"
    assert_same_training_state(tmp_path / "straight" / last, tmp_path / "resumed" / last)


def test_runs_that_start_together_decode_once_and_a_killed_builds_leftovers_go(tmp_path, console):
    images = write_image_folder(tmp_path / "images", {"a": 30, "b": 30})
    options = {"data_dir": str(images), "decoded": DecodedImages(cache_dir=str(tmp_path / "cache"), max_memory_mb=0)}
    first = ImageFolderDataModule(**options)
    first.setup("fit")
    (path,) = cache_files(tmp_path / "cache")
    left = path.with_name(f".{path.name}.killed{TEMPORARY_SUFFIX}")
    left.write_bytes(b"half a cache")
    (images / "a" / "0.png").unlink()  # the files changed: a rebuild, which clears what a killed one left
    console.clear()
    modules = [ImageFolderDataModule(**options) for _ in range(3)]
    threads = [threading.Thread(target=data.setup, args=("fit",)) for data in modules]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert console.text.count("Decoding 59 images") == 1 and not left.exists()
    assert len({tuple(images_of(data, "val_dataloader").flatten().tolist()) for data in modules}) == 1
    path.unlink()  # while mapped: the runs that opened it read on
    assert len(images_of(modules[0], "train_dataloader")) == len(modules[0].train_set)


def test_a_missing_image_is_named_before_any_is_decoded(tmp_path, monkeypatch):
    folder = write_csv(tmp_path / "csv", ["target"])
    (folder / "train_7.png").unlink()
    monkeypatch.setattr(ImageConversion, "decode", lambda self, path: pytest.fail(f"{path} decoded"))
    data = CSVRegressionDataModule(data_dir=str(folder), decoded=DecodedImages(cache_dir=str(tmp_path / "cache")))
    with pytest.raises(UserInputError, match=r"^1 images cannot be decoded: .*train_7\.png \(.*No such file"):
        data.setup("fit")


def test_a_cache_folder_among_the_class_folders_is_not_taken_for_a_class(tmp_path, console):
    images = write_image_folder(tmp_path / "images", {"a": 10, "b": 10})
    for _ in range(2):  # the second run finds the cache folder there
        data = ImageFolderDataModule(
            data_dir=str(images), decoded=DecodedImages(cache_dir=str(images / "cache"), max_memory_mb=0)
        )
        data.setup("fit")
        assert data.classes == ["a", "b"] and len(cache_files(images / "cache")) == 1
