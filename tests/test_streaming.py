"""Image folders and CSVs as litdata chunks (``data.stream``): written once from the files, read back from a folder or
a "remote" (a local folder behind litdata's ``local:`` prefix) with the files' pixels, targets, splits and few-shot
subsets, trained in an order that reads each chunk once an epoch; a run killed mid-epoch and resumed from the chunks
ends as the uninterrupted one; one line for bad input; nothing in the chunks is unpickled."""

from __future__ import annotations

import json
import logging
import sys
from functools import partial
from pathlib import Path

import pytest
import torch
import yaml
from conftest import write_image_folder
from helpers import Interrupted
from test_arrays import EXACT_RESUME_SETTINGS
from test_cache import batches, write_csv
from test_reliability import assert_same_training_state

from project.cli import run_cli
from project.data import (
    CSVMultilabelDataModule,
    CSVRegressionDataModule,
    DecodedImages,
    ImageFolderDataModule,
    streaming,
)
from project.data.sampler import ResumableSampler
from project.data.stream_order import CHUNK_WINDOW, ChunkSampler, chunk_layout, chunk_order
from project.data.streaming import Streamed, StreamedImages
from project.errors import DataNotFoundError, UserInputError

pytest.importorskip("litdata")

SPLITS = ("train_dataloader", "val_dataloader", "test_dataloader")


@pytest.fixture(autouse=True)
def console(caplog):
    caplog.set_level(logging.INFO)
    return caplog


def options(tmp_path: Path, chunks: str, **extra) -> dict:
    """A module's options that read through DataLoaders (as the chunks are read), its cache and chunks in tmp_path."""
    stream = {"chunks": chunks, "cache_dir": str(tmp_path / "downloads")}
    decoded = DecodedImages(cache_dir=str(tmp_path / "cache"))
    return {"decoded": decoded, "stream": stream, "loading": {"in_memory": False, "num_workers": 0}, **extra}


def examples(batched) -> list[tuple[bytes, bytes]]:
    """The (image, target) pairs of some batches, in a canonical order: what an epoch holds, whatever its order."""
    pairs = [(image, target) for images, targets in batched for image, target in zip(images, targets, strict=True)]
    return sorted((image.numpy().tobytes(), target.numpy().tobytes()) for image, target in pairs)


def same_batches(files, streamed) -> None:
    """The same validation and test batches as from the files, and the same training examples each epoch (in the
    chunks' own order)."""
    for data in (files, streamed):
        data.prepare_data()
        data.setup("fit")
    for split in SPLITS:
        expected, actual = batches(files, split), batches(streamed, split)
        assert len(expected) == len(actual) > 0
        if split == "train_dataloader":
            assert examples(expected) == examples(actual)
            continue
        for (images, targets), (streamed_images, streamed_targets) in zip(expected, actual, strict=True):
            assert torch.equal(images, streamed_images) and torch.equal(targets, streamed_targets), split


def test_chunks_give_the_files_examples_from_a_folder_and_from_a_remote(tmp_path, console):
    images = write_image_folder(tmp_path / "images" / "train", {"a": 20, "b": 20, "c": 20})
    write_image_folder(tmp_path / "images" / "test", {"a": 5, "b": 5, "c": 5})
    few = {"split": {"val_size": 12, "samples_per_class": 8}, "labels": {"only_classes": [2, 0]}, "batch_size": 5}
    kept = options(tmp_path, None, **few)
    files = ImageFolderDataModule(data_dir=str(images.parent), **{**kept, "stream": {}})
    written = ImageFolderDataModule(data_dir=str(images.parent), **options(tmp_path, str(tmp_path / "chunks"), **few))
    same_batches(files, written)
    assert "Writing 60 images of the train split" in console.text and "15 images of the test split" in console.text
    leaf = written.train_set
    while not isinstance(leaf, StreamedImages):  # the few-shot subset of the relabelled training split
        leaf = leaf.dataset
    console.clear()  # a machine without the images: the class names come from the chunks too
    remote = options(tmp_path, f"local:{tmp_path / 'chunks'}", **few)
    from_remote = ImageFolderDataModule(data_dir=str(tmp_path / "elsewhere"), **remote)
    assert from_remote.classes == ["a", "b", "c"]
    same_batches(files, from_remote)
    assert "Writing" not in console.text and "Decoding" not in console.text
    assert list((tmp_path / "downloads").rglob("chunk-*.bin"))  # downloaded where data.stream.cache_dir says


@pytest.mark.parametrize("module", [CSVRegressionDataModule, CSVMultilabelDataModule])
def test_csv_targets_come_back_from_the_chunks(module, tmp_path):
    columns = ["target"] if module is CSVRegressionDataModule else ["even", "odd", "third"]
    folder = write_csv(tmp_path / "csv", columns, rows=30)
    files = module(data_dir=str(folder), **options(tmp_path, None, split={"val_size": 6}, stream={}))
    streamed = module(data_dir=str(folder), **options(tmp_path, str(tmp_path / "chunks"), split={"val_size": 6}))
    same_batches(files, streamed)
    remote = module(data_dir=str(tmp_path / "gone"), **options(tmp_path, f"local:{tmp_path / 'chunks'}"))
    assert remote.class_names == streamed.class_names and remote.task == files.task


def leaf_of(dataset):
    while not isinstance(dataset, StreamedImages):
        dataset = dataset.dataset
    return dataset


def test_training_reads_each_chunk_once_an_epoch_in_a_seeded_order(tmp_path, monkeypatch):
    monkeypatch.setattr(streaming, "CHUNK_BYTES", 8000)  # about 10 images a chunk
    images = write_image_folder(tmp_path / "images", {"a": 40, "b": 40, "c": 40})
    few = {"split": {"val_size": 10, "samples_per_class": 20}, "labels": {"only_classes": [0, 2]}, "batch_size": 7}
    ImageFolderDataModule(data_dir=str(images), **options(tmp_path, str(tmp_path / "chunks"))).prepare_data()
    data = ImageFolderDataModule(data_dir=str(images), **options(tmp_path, f"local:{tmp_path / 'chunks'}", **few))
    data.prepare_data()
    data.setup("fit")
    chunk_of = chunk_layout(data.train_set)
    assert len(chunk_of) == 40 and len(chunk_of.unique()) > 2 * CHUNK_WINDOW  # a subset over several windows
    held = leaf_of(data.train_set).chunks()
    reads, read = [], held.read
    held.read = lambda start, end: reads.append(start) or read(start, end)

    def epoch(sampler) -> list[int]:
        """An epoch through ``sampler`` (the chunks read recorded), and its order."""
        held.held.clear()
        reads.clear()
        assert sum(len(targets) for _, targets in data.loader(data.train_set, 7, sampler)) == 40
        return [*sampler]

    order = epoch(data.training_sampler())
    assert sorted(order) == list(range(40)) and len(reads) == len(set(reads)) == len(chunk_of.unique())
    assert order == [*data.training_sampler()]  # seeded
    plain = ResumableSampler(data.train_set, seed=data.shuffle_seed)  # negative control: the files' order
    assert sorted(epoch(plain)) == list(range(40)) and len(reads) > 2 * len(chunk_of.unique())
    later = ChunkSampler(data.train_set, chunk_of, data.shuffle_seed)
    later.set_epoch(1)
    assert [*later] != order and sorted(later) == list(range(40))
    shares = [ChunkSampler(data.train_set, chunk_of, 0, num_replicas=2, rank=rank) for rank in (0, 1)]
    first, second = ([*share] for share in shares)
    assert len(first) == len(second) == 20 and sorted(first + second) == list(range(40))
    mine, theirs = set(chunk_of[first].tolist()), set(chunk_of[second].tolist())
    assert len(mine & theirs) <= CHUNK_WINDOW  # each its own chunks, but for the window the two share


def test_the_chunk_order_shuffles_windows_of_chunks():
    chunk_of = torch.arange(12).repeat_interleave(5)  # 12 chunks of 5
    order = chunk_order(chunk_of, seed=3)
    windows = [set(chunk_of[order[start : start + 20]].tolist()) for start in range(0, 60, 20)]
    assert sorted(order.tolist()) == list(range(60)) and all(len(window) == CHUNK_WINDOW for window in windows)
    assert torch.equal(order, chunk_order(chunk_of, seed=3)) and not torch.equal(order, chunk_order(chunk_of, 4))
    assert not torch.equal(order, torch.arange(60))


@pytest.mark.parametrize(
    "workers", [0, pytest.param(2, marks=pytest.mark.slow)], ids=["in the main process", "through DataLoader workers"]
)
def test_a_run_resumed_mid_epoch_from_chunks_equals_an_uninterrupted_one(workers, tmp_path, monkeypatch):
    monkeypatch.setattr(streaming, "CHUNK_BYTES", 8000)  # 10 images a chunk: the order crosses chunks and windows
    images = write_image_folder(tmp_path / "images", {"a": 30, "b": 30, "c": 30})
    chunks, downloads = tmp_path / "chunks", tmp_path / "downloads"
    ImageFolderDataModule(data_dir=str(images), **options(tmp_path, str(chunks))).prepare_data()  # written once
    small = ["--model.network.init_args.width=8", "--model.network.init_args.hidden_size=16"]
    data = ["--data=ImageFolderDataModule", f"--data.data_dir={tmp_path / 'elsewhere'}", "--data.batch_size=12",
            f"--data.stream.chunks=local:{chunks}", f"--data.stream.cache_dir={downloads}",
            f"--data.loading.num_workers={workers}", "--data.augment.shift=2"]  # fmt: skip
    recipe = tmp_path / "settings.yaml"
    recipe.write_text(yaml.safe_dump(EXACT_RESUME_SETTINGS))
    args = ["fit", f"--config={recipe}", *data, *small, "--test_after_fit=false"]  # 6 steps per epoch, 12 in all
    for name in ("straight", "resumed"):
        (tmp_path / name).mkdir()
    monkeypatch.chdir(tmp_path / "straight")
    cli = run_cli(args)
    assert not cli.datamodule.memory and cli.datamodule.manifest is not None  # a DataLoader, from the chunks
    monkeypatch.chdir(tmp_path / "resumed")
    with pytest.raises(Interrupted):  # after step 9; last.ckpt holds step 8, 2 batches into the second epoch
        run_cli([*args, "--trainer.callbacks+=helpers.InterruptAtStep", "--trainer.callbacks.step=9"])
    run_cli([*args, "--ckpt_path=last"])
    last = Path("logs") / "settings" / "version_0" / "checkpoints" / "last.ckpt"
    assert_same_training_state(tmp_path / "straight" / last, tmp_path / "resumed" / last)


def test_chunks_of_another_folder_or_conversion_are_refused(tmp_path):
    images = write_image_folder(tmp_path / "images", {"a": 6, "b": 6})
    chunks = str(tmp_path / "chunks")
    ImageFolderDataModule(data_dir=str(images), **options(tmp_path, chunks)).prepare_data()
    with pytest.raises(UserInputError, match=r"written by another conversion .*1x28x28.* not 1x32x32"):
        ImageFolderDataModule(data_dir=str(images), image_size=32, **options(tmp_path, chunks)).prepare_data()
    with pytest.raises(UserInputError, match=r"written by another data module \(ImageFolderDataModule"):
        write_csv(images, ["target"], rows=4)
        CSVRegressionDataModule(data_dir=str(images), **options(tmp_path, chunks)).prepare_data()
    write_image_folder(tmp_path / "images", {"a": 7, "b": 6})  # one more image: another folder than was written
    with pytest.raises(UserInputError, match=r"^data\.stream\.chunks .* written from another folder than .*images"):
        ImageFolderDataModule(data_dir=str(images), **options(tmp_path, chunks)).prepare_data()


def test_bad_stream_options_are_refused_in_one_line(tmp_path, monkeypatch):
    images = write_image_folder(tmp_path / "images", {"a": 4, "b": 4})
    with pytest.raises(UserInputError, match=r"^data\.data_dir s3://bucket/photos is object storage.*stream\.chunks"):
        ImageFolderDataModule(data_dir="s3://bucket/photos")
    with pytest.raises(DataNotFoundError, match=r"no chunks at data\.stream\.chunks .*empty yet, and no images"):
        ImageFolderDataModule(data_dir=str(tmp_path / "none"), **options(tmp_path, str(tmp_path / "empty")))
    with pytest.raises(UserInputError, match=r"max_cache_gb must be more than 0"):
        Streamed(chunks="x", max_cache_gb=0)
    (tmp_path / "stopped" / "train").mkdir(parents=True)  # a conversion stopped after its first split
    partial_chunks = options(tmp_path, str(tmp_path / "stopped"))
    write = partial(ImageFolderDataModule(data_dir=str(images), **partial_chunks).prepare_data)
    write()
    (tmp_path / "stopped" / "manifest" / "index.json").unlink()
    with pytest.raises(UserInputError, match=r"already holds chunks but the folder has no manifest .*delete it"):
        ImageFolderDataModule(data_dir=str(images), **partial_chunks).prepare_data()
    read_only = options(tmp_path, f"local:{tmp_path / 'new'}")
    with pytest.raises(UserInputError, match=r"holds no chunks, and litdata writes chunks only to a folder, s3://"):
        ImageFolderDataModule(data_dir=str(images), **read_only)
    monkeypatch.setitem(sys.modules, "litdata", None)  # not installed
    with pytest.raises(UserInputError, match=r"^data\.stream\.chunks needs litdata.*pip install 'project\[stream\]'"):
        ImageFolderDataModule(data_dir=str(images), **options(tmp_path, str(tmp_path / "chunks")))


class _Marker:
    """An object whose unpickling writes a file: what chunks of someone else's could run."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def _pickled_item(marker: str, index: int) -> dict:
    return {"index": index, "pixels": _Marker(marker)}


def test_chunks_that_hold_pickles_are_refused_and_never_unpickled(tmp_path):
    from litdata import optimize

    marker = tmp_path / "ran"
    url = tmp_path / "chunks" / "train"
    optimize(fn=partial(_pickled_item, str(marker)), inputs=[0, 1], output_dir=str(url), num_workers=1,
             chunk_bytes="1MB", verbose=False, start_method="fork")  # fmt: skip
    assert "pickle" in json.loads((url / "index.json").read_text())["config"]["data_format"]
    for chunks in (str(tmp_path / "chunks"), f"local:{tmp_path / 'chunks'}"):  # its index read here, or by litdata
        stream = Streamed(chunks=chunks, cache_dir=str(tmp_path / "downloads"))
        images = StreamedImages(stream, "train", (1, 2, 2), torch.tensor([0, 1]))
        with pytest.raises(UserInputError, match=r"serialized as .*pickle.*: this project reads only int and bytes"):
            images.pixels_of([1])
    assert not marker.exists()


@pytest.mark.slow
def test_the_stream_benchmark_reads_every_training_image_each_way(tmp_path):
    import subprocess

    script = Path(__file__).resolve().parents[1] / "scripts" / "benchmark_stream.py"
    out = tmp_path / "stream.json"
    command = [sys.executable, str(script), "--quick", "--work-dir", str(tmp_path), "--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [row["path"] for row in rows] == [
        "decode into the cache",
        "write chunks",
        "in-memory",
        "cache",
        "chunks",
        "chunks-remote",
        "chunks, no workers",
    ]
    assert {row["images"] for row in rows[2:]} == {1799}  # 90% of 2,000, less the one validation image
