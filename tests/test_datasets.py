"""A ``torch.utils.data.Dataset`` of one's own (``DatasetDataModule``): named in a config and rebuilt by
``scripts/evaluate.py`` from the checkpoint, a subclass that fixes its parent's arguments rebuilt too, and the
normalisation new images will go through stated, and checked against the dataset's images, before any work."""

from __future__ import annotations

import json
import runpy
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from helpers import cli_error, run_script
from test_arrays import CLASSES, SMALL_NET, squares
from torch.utils.data import Dataset

from project.cli import run_cli
from project.data import DatasetDataModule, Split
from project.errors import UserInputError
from project.inference.evaluation import data_module_from_checkpoint
from project.trusted import trust

REPO_ROOT = Path(__file__).resolve().parents[1]
trust(__name__)  # its datasets are named in configs, as a user's own module's are (--trust test_datasets)


class SquaresDataset(Dataset):
    """A Dataset of one's own: the squares of ``test_arrays`` as float images, normalised with 0.5 and 0.5 (or, with
    ``normalise`` false, left as pixels on the 0..1 scale)."""

    def __init__(self, count: int = 120, seed: int = 0, normalise: bool = True) -> None:
        images, labels = squares(count, seed)
        self.images = torch.from_numpy(images).float().div(255).unsqueeze(1)
        self.labels = labels.tolist()
        self.normalise = normalise

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index]
        return ((image - 0.5) / 0.5 if self.normalise else image), self.labels[index]


class FixedSquares(DatasetDataModule):
    """A data module of one's own that fixes what its data is: the classes and normalisation go to its parent."""

    def __init__(self, count: int = 120, **kwargs: Any) -> None:
        super().__init__(SquaresDataset(count), num_classes=CLASSES, mean=0.5, std=0.5, **kwargs)


def write_config(folder: Path, **data: Any) -> Path:
    """``folder/own.yaml``: a DatasetDataModule of :class:`SquaresDataset`, named by class path, and ``data``."""
    init_args = {
        "train_dataset": {"class_path": f"{__name__}.SquaresDataset", "init_args": {"count": 120}},
        "num_classes": CLASSES,
        "mean": 0.5,
        "std": 0.5,
        "split": {"val_size": 12},
        **data,
    }
    config = {
        "trainer": {"max_epochs": 1, "logger": {"init_args": {"name": "own"}}},
        "model": {"network": {"init_args": SMALL_NET}},
        "data": {"class_path": "project.data.DatasetDataModule", "init_args": init_args},
    }
    path = folder / "own.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow
def test_the_dataset_example_trains_resumes_exports_and_evaluate_rebuilds_its_dataset(run_dir, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO_ROOT))  # as python -m project runs from the clone
    monkeypatch.setattr(sys, "argv", ["make_arrays.py", str(run_dir / "arrays"), "--count", "300"])
    runpy.run_path(str(REPO_ROOT / "examples" / "arrays" / "make_arrays.py"), run_name="__main__")
    trust, config = "--trust=examples.arrays.dataset", REPO_ROOT / "examples" / "arrays" / "dataset_config.yaml"
    args = [
        "fit",
        trust,
        f"--config={config}",
        "--config=debug",
        f"--data.train_dataset.init_args.folder={run_dir / 'arrays'}",
    ]
    run_cli([*args, "--trainer.max_epochs=1", "--test_after_fit=false"])
    last = run_dir / "logs" / "dataset" / "version_0" / "checkpoints" / "last.ckpt"
    report = ["--out", str(run_dir / "report")]
    code, _, err = run_script(
        "evaluate.py", [str(last), "--trust", "examples.arrays.dataset", *report], capsys, monkeypatch
    )
    assert code == 0, err
    assert json.loads((run_dir / "report" / "metrics.json").read_text())["count"] == 60  # 20% of 300 held out
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["preprocessing"]["mean"] == [0.5]  # what new images to predict go through
    recorded = checkpoint["datamodule_hyper_parameters"]["train_dataset"]
    assert recorded == {
        "class_path": "examples.arrays.dataset.ArrayImages",
        "init_args": {"folder": str(run_dir / "arrays")},
    }
    run_cli([*args, "--trainer.max_epochs=2", "--test_after_fit=false", "--ckpt_path=last"])
    assert torch.load(last, weights_only=True)["epoch"] == 1  # resumed
    export = [str(last), "--trust", "examples.arrays.dataset", "--out", str(run_dir / "export"), "--formats", "onnx"]
    code, _, err = run_script("export.py", export, capsys, monkeypatch)
    assert code == 0, err
    assert json.loads((run_dir / "export" / "config.json").read_text())["preprocessing"]["mean"] == [0.5]
    # the dataset's arguments are the run's: a resumed run may not change them (they may be anything)
    moved = shutil.copytree(run_dir / "arrays", run_dir / "moved")
    resume = [*args, "--ckpt_path=last", "--trainer.max_epochs=3"]
    error = cli_error([*resume, f"--data.train_dataset.init_args.folder={moved}"], capsys)
    assert f"data.train_dataset.init_args.folder '{moved}' (the run has '{run_dir / 'arrays'}')" in error


def test_a_checkpoint_naming_a_dataset_it_cannot_rebuild_is_one_line_saying_what_to_do(run_dir):
    run_cli(["fit", "--config=debug", f"--config={write_config(run_dir)}", "--test_after_fit=false"])
    checkpoint = torch.load(run_dir / "logs" / "own" / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)
    assert len(data_module_from_checkpoint(checkpoint).train_dataset) == 120  # rebuilt
    # a class no module imported: refused, saying how to trust its module
    checkpoint["datamodule_hyper_parameters"]["train_dataset"]["class_path"] = "not_imported.SquaresDataset"
    with pytest.raises(UserInputError, match=r"not_imported\.SquaresDataset, which is not allowed here.*--trust"):
        data_module_from_checkpoint(checkpoint)
    # a checkpoint that could not record it (a dataset built in Python): one line saying how to give it
    del checkpoint["datamodule_hyper_parameters"]["train_dataset"]
    with pytest.raises(
        UserInputError, match=r"does not record data.train_dataset .*checkpoint, train_dataset=\.\.\.\)"
    ):
        data_module_from_checkpoint(checkpoint)
    assert len(data_module_from_checkpoint(checkpoint, train_dataset=SquaresDataset(60)).train_dataset) == 60


def test_a_dataset_argument_that_names_a_class_itself_is_refused_on_rebuilding():
    spec = {"class_path": f"{__name__}.SquaresDataset", "init_args": {"count": {"class_path": "builtins.int"}}}
    recorded = {"_class_path": "project.data.DatasetDataModule", "num_classes": CLASSES, "mean": 0.5, "std": 0.5}
    checkpoint = {"datamodule_hyper_parameters": {**recorded, "train_dataset": spec}}
    with pytest.raises(UserInputError, match=r"data.train_dataset.init_args.count names a class \(builtins.int\)"):
        data_module_from_checkpoint(checkpoint)


def test_a_subclass_that_fixes_its_parents_arguments_is_rebuilt_from_what_it_was_given():
    data = FixedSquares(count=60, batch_size=7)
    recorded = dict(data.hparams)
    assert (recorded["count"], recorded["batch_size"], recorded["split"]["val_size"]) == (60, 7, 0.1)  # a default
    assert not {"num_classes", "mean", "std", "train_dataset"} & set(recorded)  # its class sets them
    assert recorded["_class_path"] == f"{__name__}.FixedSquares"  # built in Python, named as the command line does
    rebuilt = data_module_from_checkpoint({"datamodule_hyper_parameters": recorded})
    assert type(rebuilt) is FixedSquares and (len(rebuilt.train_dataset), rebuilt.batch_size) == (60, 7)
    plain = DatasetDataModule(
        SquaresDataset(), num_classes=CLASSES, mean=0.5, std=0.5, split=Split(test_size=0.25)
    ).hparams
    assert (plain["num_classes"], plain["mean"], plain["split"]["test_size"]) == (CLASSES, 0.5, 0.25)  # recorded


def test_a_datasets_normalisation_must_be_stated_and_match_its_images(run_dir, capsys):
    normalised, pixels = SquaresDataset(), SquaresDataset(normalise=False)
    with pytest.raises(UserInputError, match=r"DatasetDataModule needs data.mean and data.std: .*mean 0 and std 1"):
        DatasetDataModule(normalised, num_classes=CLASSES)
    with pytest.raises(UserInputError) as caught:  # said otherwise, new images would be predicted un-normalised
        DatasetDataModule(normalised, num_classes=CLASSES, mean=0.0, std=1.0)
    message = str(caught.value)
    assert "data.train_dataset[0]'s image is not pixels on the 0..1 scale normalised with data.mean [0.0]" in message
    assert "undone, they run from -1 to 1;" in message and "\n" not in message
    assert DatasetDataModule(normalised, num_classes=CLASSES, mean=0.5, std=0.5).preprocessing()["mean"] == [0.5]
    assert DatasetDataModule(pixels, num_classes=CLASSES, mean=0, std=1).preprocessing()["std"] == [1.0]
    error = cli_error(["fit", "--config=debug", f"--config={write_config(run_dir, mean=None, std=None)}"], capsys,
                      root=run_dir)  # fmt: skip
    assert "DatasetDataModule needs data.mean and data.std" in error
