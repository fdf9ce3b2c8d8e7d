"""A user's own data in arrays (.npy / .npz files, tensors built in Python) or in a Dataset of their own: trained
through the command line on the in-memory path, resumed exactly, evaluated, split and subset as every data module,
and refused in one line when the files are not what is allowed. Also: the base config without data, and a data
module that records its own hyper-parameters."""

from __future__ import annotations

import os
import pickle
import re
import runpy
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from helpers import Interrupted, RecordLR, cli_error, quiet_trainer, run_script
from test_cli import print_config
from test_reliability import assert_same_training_state
from torch.utils.data import Dataset

from project.cli import run_cli
from project.cli.presets import BASE_CONFIG, DEFAULT_CONFIG, default_configs
from project.data import ArrayDataModule, DatasetDataModule, Labels, Split, TensorDataModule
from project.errors import UserInputError
from project.inference.evaluation import data_module_from_checkpoint
from project.networks import ConvNet
from project.training.task_module import TaskModule
from project.trusted import trust

trust(__name__)  # its classes are named in configs (--trainer.callbacks+=...), as a user's own module's

SIDE, COUNT, CLASSES = 16, 120, 3
SMALL_NET = {"image_size": SIDE, "width": 8, "hidden_size": 16}


def squares(count: int = COUNT, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, 16, 16) of dim noise with a bright square whose place is the class, and the labels."""
    generator = np.random.default_rng(seed)
    labels = np.arange(count) % CLASSES
    images = generator.integers(0, 60, (count, SIDE, SIDE), dtype=np.uint8)
    for index, label in enumerate(labels):
        images[index, 2 + 4 * label : 6 + 4 * label, 4:10] = 255
    return images, labels


def write_arrays(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    images, labels = squares()
    np.save(folder / "images.npy", images)
    np.save(folder / "labels.npy", labels)
    return folder


def write_recipe(folder: Path, settings: dict[str, Any] | None = None, **init_args: Any) -> Path:
    """``folder/arrays.yaml``: ArrayDataModule on ``folder``'s arrays, a small ConvNet, and ``settings``."""
    data = {"train_images": "images.npy", "train_labels": "labels.npy", "data_dir": str(folder), **init_args}
    recipe = {"model": {"network": {"init_args": SMALL_NET}}, **(settings or {})}
    recipe["data"] = {"class_path": "project.data.ArrayDataModule", "init_args": data}
    path = folder / "arrays.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.fixture
def arrays(tmp_path: Path) -> Path:
    return write_arrays(tmp_path / "arrays")


@pytest.fixture(scope="module")
def array_run(tmp_path_factory) -> tuple[Path, Any]:
    """A short fit on arrays through the command line (the debug preset): its folder and the CLI."""
    folder = write_arrays(tmp_path_factory.mktemp("array_run"))
    previous = Path.cwd()
    os.chdir(folder)
    try:
        cli = run_cli(["fit", f"--config={write_recipe(folder)}", "--config=debug", "--data.split.val_size=20"])
    finally:
        os.chdir(previous)
    return folder, cli


# -- the configs every run starts from ----------------------------------------------------------------------------


def test_a_run_that_chooses_its_data_starts_from_the_base_config_alone(arrays):
    assert default_configs(["fit", "--config=classic.yaml"]) == [BASE_CONFIG, DEFAULT_CONFIG]
    assert default_configs(["fit", "--data=project.data.ArrayDataModule"]) == [BASE_CONFIG]
    assert default_configs(["fit", "--data.class_path", "project.data.ArrayDataModule"]) == [BASE_CONFIG]
    assert default_configs(["fit", "--config", str(write_recipe(arrays))]) == [BASE_CONFIG]
    assert "data" not in yaml.safe_load(BASE_CONFIG.read_text())


def test_a_recipe_naming_array_data_does_not_inherit_mnists_val_size(arrays):
    data = print_config("--config", str(write_recipe(arrays)))["data"]
    assert data["class_path"] == "project.data.ArrayDataModule"
    assert data["init_args"]["split"]["val_size"] == 0.1 and "dataset" not in data["init_args"]  # not mnist's 5000
    on_the_command_line = print_config("--config=debug", "--data=project.data.ArrayDataModule")["data"]["init_args"]
    assert (on_the_command_line["split"]["val_size"], on_the_command_line["batch_size"]) == (0.1, 50)  # debug's batch
    assert print_config("--config", "classic")["data"]["init_args"]["split"]["val_size"] == 5000  # MNIST by default


# -- through the command line ----------------------------------------------------------------------------------


def test_arrays_train_through_the_command_line_on_the_in_memory_path(array_run):
    folder, cli = array_run
    assert cli.datamodule.memory.keys() == {"train", "val", "test"}
    assert "test/acc" in cli.trainer.callback_metrics
    checkpoint = torch.load(folder / "logs" / "arrays" / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)
    stored = checkpoint["datamodule_hyper_parameters"]
    assert (stored["_class_path"], stored["train_images"], stored["split"]["val_size"]) == (
        "project.data.ArrayDataModule",
        "images.npy",
        20,
    )
    assert checkpoint["preprocessing"]["image_size"] == SIDE


def test_evaluate_reports_a_checkpoint_trained_on_arrays_moved_elsewhere(array_run, tmp_path, capsys, monkeypatch):
    folder, _ = array_run
    moved = write_arrays(tmp_path / "moved")  # the same arrays, in another folder
    last = folder / "logs" / "arrays" / "version_0" / "checkpoints" / "last.ckpt"
    args = [str(last), "--data.data_dir", str(moved), "--out", str(tmp_path / "report")]
    code, _, err = run_script("evaluate.py", args, capsys, monkeypatch)
    assert code == 0, err
    report = yaml.safe_load((tmp_path / "report" / "metrics.json").read_text())
    assert report["count"] == 24 and report["class_names"] == ["0", "1", "2"]  # the held-out 20% of 120


EXACT_RESUME_SETTINGS = {
    "seed_everything": 7,
    "trainer": {
        "max_epochs": 2,
        "log_every_n_steps": 2,
        "enable_progress_bar": False,
        "callbacks": [
            {"class_path": "project.training.checkpoints.LastCheckpoint", "init_args": {"every_n_train_steps": 4}},
            {"class_path": "project.training.resume.ExactResume"},
        ],
    },
}
"""A short run that writes last.ckpt every 4 steps and resumes exactly: the settings of the resume tests on arrays."""


@pytest.mark.parametrize(
    "in_memory", [True, pytest.param(False, marks=pytest.mark.slow)], ids=["in memory", "through a DataLoader"]
)
def test_a_resumed_run_on_arrays_equals_an_uninterrupted_one(in_memory, arrays, tmp_path, monkeypatch):
    settings = EXACT_RESUME_SETTINGS
    recipe = write_recipe(arrays, settings, batch_size=20, augment={"shift": 2}, loading={"in_memory": in_memory})
    args = ["fit", f"--config={recipe}", "--test_after_fit=false"]  # 5 steps per epoch, 10 in all
    for name in ("straight", "resumed"):
        (tmp_path / name).mkdir()
    monkeypatch.chdir(tmp_path / "straight")
    run_cli(args)
    monkeypatch.chdir(tmp_path / "resumed")
    with pytest.raises(Interrupted):  # after step 9; last.ckpt holds step 8, 3 batches into the second epoch
        run_cli([*args, "--trainer.callbacks+=helpers.InterruptAtStep", "--trainer.callbacks.step=9"])
    resumed = run_cli([*args, "--ckpt_path=last", "--trainer.callbacks+=helpers.RecordLR"])
    recorder = next(callback for callback in resumed.trainer.callbacks if isinstance(callback, RecordLR))
    assert sorted(recorder.by_step) == [8, 9]  # from the checkpoint's step on, none twice
    last = Path("logs") / "arrays" / "version_0" / "checkpoints" / "last.ckpt"
    assert_same_training_state(tmp_path / "straight" / last, tmp_path / "resumed" / last)


def test_the_worked_example_writes_arrays_and_trains_on_them_with_its_config(run_dir, monkeypatch, capsys):
    example = Path(__file__).resolve().parents[1] / "examples" / "arrays"
    monkeypatch.setattr(sys, "argv", ["make_arrays.py", str(run_dir / "mine"), "--count", "300"])
    runpy.run_path(str(example / "make_arrays.py"), run_name="__main__")
    assert "wrote" in capsys.readouterr().out
    args = [f"--config={example / 'config.yaml'}", "--config=debug", f"--data.data_dir={run_dir / 'mine'}"]
    cli = run_cli(["fit", *args, "--trainer.max_epochs=1"])
    assert (run_dir / "logs" / "arrays" / "version_0" / "checkpoints" / "last.ckpt").is_file()
    assert cli.datamodule.num_classes == 4 and "test/acc" in cli.trainer.callback_metrics


class SquaresDataModule(TensorDataModule):
    """A data module of one's own that does not call save_hyperparameters(): the base records its arguments."""

    def __init__(self, count: int = COUNT, **kwargs: Any) -> None:
        images, labels = squares(count)
        super().__init__(train_images=images, train_labels=labels, **kwargs)


def test_a_subclass_records_its_arguments_without_saving_them_itself(run_dir, capsys):
    recorded = SquaresDataModule(count=60, batch_size=7).hparams
    assert (recorded["count"], recorded["batch_size"], recorded["split"]["val_size"]) == (60, 7, 0.1)
    assert "train_images" not in recorded  # an array: kept out of checkpoints
    net = [f"--model.network.init_args.{name}={value}" for name, value in SMALL_NET.items()]
    data = ["--data=test_arrays.SquaresDataModule", "--data.count=90", "--data.split.val_size=10"]
    args = ["fit", "--config=debug", *data, *net]
    run_cli([*args, "--trainer.max_epochs=1", "--test_after_fit=false"])
    last = run_dir / "logs" / "SquaresDataModule" / "version_0" / "checkpoints" / "last.ckpt"
    rebuilt = data_module_from_checkpoint(torch.load(last, weights_only=True))
    assert type(rebuilt) is SquaresDataModule and (rebuilt.hparams["count"], rebuilt.batch_size) == (90, 50)
    error = cli_error([*args, "--ckpt_path=last", "--data.batch_size=25"], capsys)
    assert "cannot change on resume" in error and "data.batch_size 25 (the run has 50)" in error


# -- in Python: splits, subsets, label rules, layouts ------------------------------------------------------------


class OwnDataset(Dataset):
    """A Dataset of one's own: normalised float images and int labels."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images = torch.from_numpy(images).float().div(255).unsqueeze(1)
        self.labels = labels.tolist()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return (self.images[index] - 0.5) / 0.5, self.labels[index]


def split_sizes(data) -> tuple[int, int, int]:
    data.setup("fit")
    return len(data.train_set), len(data.val_set), len(data.test_set)


def test_arrays_and_datasets_get_the_same_splits_and_few_shot_subsets():
    images, labels = squares()
    arrays = TensorDataModule(images, labels, split=Split(val_size=12, samples_per_class=5))
    dataset = DatasetDataModule(OwnDataset(images, labels), num_classes=CLASSES, mean=0.5, std=0.5,
                                split=Split(val_size=12, samples_per_class=5))  # fmt: skip
    assert split_sizes(arrays) == split_sizes(dataset) == (15, 12, 24)  # 5 per class; 20% of 120 held out for test
    for split in ("train_set", "val_set", "test_set"):
        ours, theirs = getattr(arrays, split), getattr(dataset, split)
        assert arrays.split_labels(ours).tolist() == dataset.split_labels(theirs).tolist()
    fraction = TensorDataModule(
        images, labels, images[:30], labels[:30], split=Split(val_size=0.25, train_fraction=0.5)
    )
    assert split_sizes(fraction)[1:] == (30, 30)
    left = 40 - torch.bincount(fraction.split_labels(fraction.val_set))  # of each class, after validation's
    kept = torch.bincount(fraction.split_labels(fraction.train_set))
    assert kept.tolist() == [round(count / 2) for count in left.tolist()]  # half of each class


def test_label_rules_apply_to_arrays():
    images, labels = squares()
    binary = TensorDataModule(images, labels, labels=Labels(positive_classes=[2], class_names=["a", "b", "c"]))
    assert (binary.task, binary.num_outputs, binary.class_names) == ("binary", 1, ["other", "positive"])
    some = TensorDataModule(images, labels, labels=Labels(only_classes=[2, 0], class_names=["a", "b", "c"]))
    some.setup("fit")
    assert some.class_names == ["c", "a"] and set(some.memory["train"].targets.tolist()) == {0, 1}


def test_channels_last_float_images_take_the_in_memory_path_as_the_dataloader_does():
    rgb = np.random.default_rng(1).random((40, 8, 8, 3), dtype=np.float32)  # (N, H, W, C) in [0, 1]
    data = TensorDataModule(rgb[:30], np.arange(30) % 2, rgb[30:], np.arange(10) % 2, split=Split(val_size=8))
    assert data.image_shape == (3, 8, 8)
    assert data.normalisation()[0] == pytest.approx(rgb[:30].mean(axis=(0, 1, 2)).tolist(), abs=1e-6)
    data.setup("fit")
    batch, _ = next(iter(data.batches("val", data.val_set, 8)))
    one_by_one = torch.stack([data.val_set[i][0] for i in range(8)])
    assert torch.equal(batch, one_by_one)  # pixels, as held: normalised once, by the data module
    normalised, _ = data.network_batch((batch, None), augment=False)
    mean, std = (torch.tensor(values).view(1, 3, 1, 1) for values in data.normalisation())
    assert torch.allclose(normalised, (one_by_one - mean) / std, atol=1e-6)


def test_a_dataset_of_ones_own_trains_and_tests_in_python():
    images, labels = squares()
    train, test = OwnDataset(images[:90], labels[:90]), OwnDataset(images[90:], labels[90:])
    data = DatasetDataModule(
        train, test, num_classes=CLASSES, mean=0.5, std=0.5, batch_size=16, split=Split(val_size=10)
    )
    module = TaskModule(ConvNet(num_outputs=data.num_outputs, **SMALL_NET))
    trainer = quiet_trainer(max_epochs=1)
    trainer.fit(module, datamodule=data)
    assert data.memory == {} and trainer.global_step == 5  # through a DataLoader: 80 training examples
    assert trainer.test(module, datamodule=data, verbose=False)[0]["test/acc"] >= 0
    assert data.preprocessing()["mean"] == [0.5]


# -- bad input: one line, before any work -------------------------------------------------------------------------


def test_a_pickle_in_an_npy_file_is_refused_in_one_line_and_never_loaded(arrays, run_dir, capsys):
    np.save(arrays / "labels.npy", np.array([object()] * COUNT), allow_pickle=True)
    error = cli_error(["fit", f"--config={write_recipe(arrays)}"], capsys, root=run_dir)
    assert "labels.npy (data.train_labels) is an array of Python objects" in error and "unpickling" in error
    error = cli_error(["fit", f"--config={write_recipe(arrays, train_images='missing.npy')}"], capsys, root=run_dir)
    assert f"data.train_images: {arrays / 'missing.npy'} does not exist" in error


class Payload:
    """What a pickle can do when it is loaded: here, create a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_pickle_named_npy_is_never_unpickled(arrays, tmp_path):
    marker = tmp_path / "ran"
    with (arrays / "images.npy").open("wb") as file:
        pickle.dump(Payload(marker), file)
    with pytest.raises(UserInputError, match=re.escape("images.npy (data.train_images) is not a .npy or .npz file")):
        ArrayDataModule("images.npy", "labels.npy", data_dir=str(arrays))
    assert not marker.exists()


@pytest.mark.parametrize(
    ("images", "labels", "expected"),
    [
        (np.zeros((10, 8, 8), np.uint8), np.arange(9) % 2, "labels.npy (data.train_labels) has shape (9,)"),
        (np.zeros((10, 8, 8), np.uint8), np.arange(10) / 2, "labels.npy (data.train_labels) holds float64 values"),
        (np.zeros((10, 8, 8), np.int64), np.arange(10) % 2, "images.npy (data.train_images) holds int64 values"),
        (np.zeros((10, 8, 6), np.uint8), np.arange(10) % 2, "images of 8x6 pixels; they must be square"),
        (np.zeros((10, 8, 8, 5), np.uint8), np.arange(10) % 2, "has shape (10, 8, 8, 5): images must be"),
        (np.full((10, 8, 8), np.nan, np.float32), np.arange(10) % 2, "holds NaN or infinite pixels"),
    ],
)
def test_bad_arrays_are_refused_naming_the_file_and_what_is_allowed(tmp_path, images, labels, expected):
    np.save(tmp_path / "images.npy", images)
    np.save(tmp_path / "labels.npy", labels)
    with pytest.raises(UserInputError) as refused:
        ArrayDataModule("images.npy", "labels.npy", data_dir=str(tmp_path))
    assert expected in str(refused.value) and "\n" not in str(refused.value)


def test_an_npz_with_keras_names_loads_and_one_without_the_arrays_is_refused(tmp_path):
    images, labels = squares()
    np.savez(tmp_path / "keras.npz", x_train=images[:90], y_train=labels[:90], x_test=images[90:], y_test=labels[90:])
    data = ArrayDataModule(npz=str(tmp_path / "keras.npz"), split=Split(val_size=10))
    assert split_sizes(data) == (80, 10, 30)
    np.savez(tmp_path / "other.npz", pictures=images)
    with pytest.raises(UserInputError, match=re.escape("holds the arrays ['pictures']: it must hold train_images")):
        ArrayDataModule(npz=str(tmp_path / "other.npz"))
