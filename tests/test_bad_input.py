"""Bad input is refused before any training: one `error:` line naming the value and what is allowed, exit status 2,
no traceback or usage dump, and nothing written (no log folder, no checkpoint)."""

from __future__ import annotations

import csv
import errno
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_image_folder
from helpers import cli_error
from PIL import Image

from project.cli import main, run_cli
from project.data import Split

FOLDER_PRESET = "--config=finetune_folder.yaml"


def folder_args(data_dir: Path, *extra: str) -> list[str]:
    return ["fit", FOLDER_PRESET, f"--data.data_dir={data_dir}", "--trainer.enable_progress_bar=false", *extra]


def write_png_with_corrupt_pixels(path: Path) -> None:
    """A PNG whose chunk checksums are all right (``Image.verify()`` passes) but whose pixel data cannot be inflated."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", 8, 8, 8, 0, 0, 0, 0)
    pixels = b"\x78\x9c" + bytes(range(40))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b""))


def write_truncated_jpeg(path: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path.with_suffix(".full.jpg"), quality=90)
    whole = path.with_suffix(".full.jpg").read_bytes()
    path.with_suffix(".full.jpg").unlink()
    path.write_bytes(whole[: len(whole) // 2])


def write_regression_csv(root: Path, name: str, targets: list[str], encoding: str = "utf-8") -> Path:
    """``root/name`` with columns image,target and one small grey PNG per row."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / name).open("w", newline="", encoding=encoding) as file:
        writer = csv.writer(file)
        writer.writerow(["image", "target"])
        for index, target in enumerate(targets):
            image = f"{Path(name).stem}-{index}.png"
            Image.new("L", (16, 16), color=(index * 8) % 256).save(root / image)
            writer.writerow([image, target])
    return root


def error_with_config(text: str, quick_args: list[str], run_dir: Path, capsys) -> str:
    """The error of a run whose ``--config`` file ``preset.yaml`` holds ``text``."""
    config = run_dir / "preset.yaml"
    config.write_text(text)
    return cli_error(["fit", *quick_args, f"--config={config}"], capsys, root=run_dir)


# -- the command line's own parsing: one line, no usage dump ------------------------------------------------------


def test_an_unknown_dataset_names_the_known_ones(quick_args, run_dir, capsys):
    error = cli_error(["fit", *quick_args, "--data.dataset=cifar10"], capsys, root=run_dir)
    assert "data.dataset" in error and "'cifar10'" in error and "mnist, fashion_mnist" in error


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_learning_rate_that_is_not_a_finite_number(value, quick_args, run_dir, capsys):
    error = cli_error(["fit", *quick_args, f"--model.optimizer.lr={value}"], capsys, root=run_dir)
    assert "model.optimizer.lr" in error and "finite" in error


def test_an_unknown_optimizer_names_the_known_ones(quick_args, run_dir, capsys):
    error = cli_error(["fit", *quick_args, "--model.optimizer=adam"], capsys, root=run_dir)
    assert "model.optimizer" in error and "'adam'" in error and "SGD" in error and "AdamW" in error


def test_a_batch_size_that_is_not_a_number(quick_args, run_dir, capsys):
    error = cli_error(["fit", *quick_args, "--data.batch_size=abc"], capsys, root=run_dir)
    assert "data.batch_size" in error and "integer" in error and "'abc'" in error


def test_a_yaml_syntax_error_names_the_file_and_line(quick_args, run_dir, capsys):
    error = error_with_config("model:\n  lr: [0.1\n", quick_args, run_dir, capsys)
    assert "preset.yaml: not valid YAML at line 3" in error


def test_a_missing_config_file(quick_args, run_dir, capsys):
    error = cli_error(["fit", *quick_args, "--config=nowhere.yaml"], capsys, root=run_dir)
    assert "nowhere.yaml" in error and "no such file" in error and "mnist" in error  # the presets it could have named


def test_a_misspelt_config_key_suggests_the_closest_name(quick_args, run_dir, capsys):
    error = error_with_config("model:\n  lr_batch_sise: 64\n", quick_args, run_dir, capsys)
    assert "model.lr_batch_sise" in error and "did you mean model.lr_batch_size" in error


def test_an_unknown_option_lists_what_is_allowed(quick_args, run_dir, capsys):
    error = cli_error(["fit", *quick_args, "--model.learning_rate=0.1"], capsys, root=run_dir)
    assert "model.learning_rate" in error and "model takes model.finetuning, model.lora, model.lr_batch_size" in error


def test_an_option_of_a_piece_given_before_its_class_says_to_name_the_class(quick_args, run_dir, capsys):
    error = cli_error(["fit", *quick_args, "--model.task.label_smoothing=0.1"], capsys, root=run_dir)
    assert "model.task.label_smoothing is not an option of model.task as it is given (none): name its class" in error
    cli_error(["fit", *quick_args, "--model.task=Multiclass", "--model.task.label_smooth=0.1"], capsys)  # a typo: no


@pytest.mark.parametrize(
    ("options", "said"),
    [
        (["--data.split.val_size=-3"], "data.split.val_size must be a count of 1 or more, or a fraction in (0, 1), "
         "got -3"),
        (["--data.labels.positive_classes=[1]", "--data.labels.only_classes=[1,2]"], "data.labels.positive_classes "
         "(binary), label_sets (multilabel) and only_classes (some classes) exclude each other"),
        (["--data.augment.transforms=[os.system]"], "data.augment.transforms[0]: os.system is not allowed here"),
        (["--data.loading.eval_batch_size=0"], "data.loading.eval_batch_size must be a positive integer, got 0"),
        (["--data.split.val_siz=100"], "data.split.val_siz is not an option; did you mean data.split.val_size?"),
        (["--data.val_size=100"], "data.val_size is not an option; did you mean data.split.val_size?"),
    ],
    ids=["a piece's bad value", "options of a piece that exclude each other", "a transform that is code",
         "a loading option", "an abbreviated option of a piece", "an option outside its piece"],
)  # fmt: skip
def test_a_bad_option_of_a_piece_of_the_data_is_one_line_before_any_file(options, said, quick_args, run_dir, capsys):
    error = cli_error(["fit", *quick_args, *options], capsys, root=run_dir)
    assert said in error


def test_a_negative_max_epochs(quick_args, run_dir, capsys):
    error = cli_error(["fit", *quick_args, "--trainer.max_epochs=-5"], capsys, root=run_dir)
    assert "max_epochs" in error and "-5" in error


def test_more_devices_than_the_machine_has(quick_args, run_dir, capsys):
    if torch.cuda.device_count() >= 3:
        pytest.skip("this machine has 3 GPUs")
    error = cli_error(["fit", *quick_args, "--trainer.accelerator=gpu", "--trainer.devices=3"], capsys, root=run_dir)
    assert "gpu" in error.lower()


def test_resuming_a_checkpoint_of_another_network_size(quick_args, run_dir, capsys):
    run_cli(["fit", *quick_args, "--trainer.max_epochs=1", "--test_after_fit=false"])
    last = run_dir / "logs" / "mnist" / "version_0" / "checkpoints" / "last.ckpt"
    error = cli_error(["test", *quick_args, f"--ckpt_path={last}", "--model.network.init_args.width=16"], capsys)
    assert "does not fit this network" in error and "network.backbone.0.weight" in error


def test_a_full_disk_is_one_line_that_names_the_folder_and_the_bytes(quick_args, run_dir, monkeypatch, capsys):
    def disk_full(obj, file, *args, **kwargs):
        file.write(b"part of a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    error = cli_error(["fit", *quick_args], capsys, code=1)
    folder = run_dir / "logs" / "mnist" / "version_0" / "checkpoints"
    assert "No space left on device" in error and str(folder) in error and "bytes" in error
    assert not [path for path in folder.iterdir() if path.suffix == ".tmp"]


# -- every split checked at setup, before the first step ---------------------------------------------------------


def test_a_test_folder_with_a_class_the_training_folder_lacks(tmp_path, run_dir, capsys):
    write_image_folder(tmp_path / "data" / "train", {"a": 6, "b": 6})
    write_image_folder(tmp_path / "data" / "test", {"a": 2, "b": 2, "c": 2})
    error = cli_error(folder_args(tmp_path / "data", "--data.split.val_size=2"), capsys, root=run_dir)
    assert "has classes ['a', 'b', 'c'], but the training folder has ['a', 'b']" in error


def test_a_test_folder_missing_a_class(tmp_path, run_dir, capsys):
    write_image_folder(tmp_path / "data" / "train", {"a": 6, "b": 6, "c": 6})
    write_image_folder(tmp_path / "data" / "test", {"a": 2, "b": 2})
    error = cli_error(folder_args(tmp_path / "data", "--data.split.val_size=2"), capsys, root=run_dir)
    assert "has classes ['a', 'b'], but the training folder has ['a', 'b', 'c']" in error


def test_a_corrupt_image_in_the_test_folder(tmp_path, run_dir, capsys):
    write_image_folder(tmp_path / "data" / "train", {"a": 6, "b": 6})
    write_image_folder(tmp_path / "data" / "test", {"a": 2, "b": 2})
    (tmp_path / "data" / "test" / "b" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    error = cli_error(folder_args(tmp_path / "data", "--data.split.val_size=2"), capsys, root=run_dir)
    assert "test/b/1.png" in error


def test_a_bad_target_in_test_csv(tmp_path, run_dir, capsys):
    data = write_regression_csv(tmp_path / "data", "train.csv", [str(i / 10) for i in range(20)])
    write_regression_csv(data, "test.csv", ["0.1", "0.2", "tall"])
    args = ["fit", "--data=project.data.CSVRegressionDataModule", f"--data.data_dir={data}", "--data.split.val_size=4"]
    error = cli_error(args, capsys, root=run_dir)
    assert "test.csv line 4" in error and "'tall'" in error


# -- images that pass Image.verify() but cannot be decoded ----------------------------------------------------------


def test_every_image_that_cannot_be_decoded_is_named_before_training(tmp_path, run_dir, capsys):
    images = write_image_folder(tmp_path / "images", {"a": 6, "b": 6})
    write_png_with_corrupt_pixels(images / "a" / "2.png")
    write_truncated_jpeg(images / "b" / "3.jpg")
    error = cli_error(folder_args(images), capsys, root=run_dir)
    assert "2 images cannot be decoded" in error and "a/2.png" in error and "b/3.jpg" in error


# -- regression targets --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["nan", "inf", "-inf", "1e39"])
def test_a_regression_target_that_is_not_a_finite_number(target, tmp_path, run_dir, capsys):
    data = write_regression_csv(tmp_path / "data", "train.csv", [*(str(i / 10) for i in range(10)), target])
    args = ["fit", "--data=project.data.CSVRegressionDataModule", f"--data.data_dir={data}", "--data.split.val_size=2"]
    error = cli_error(args, capsys, root=run_dir)
    assert "train.csv line 12" in error and "finite" in error


def test_a_csv_saved_with_a_byte_order_mark_is_read(tmp_path):
    from project.data.files import CSVRegressionDataModule

    data = write_regression_csv(tmp_path / "data", "train.csv", [str(i / 10) for i in range(20)], "utf-8-sig")
    assert (data / "train.csv").read_bytes().startswith(b"\xef\xbb\xbf")
    module = CSVRegressionDataModule(data_dir=str(data), split=Split(val_size=2, test_size=4))
    module.setup("fit")
    assert len(module.train_set) + len(module.val_set) + len(module.test_set) == 20


def test_a_symlink_loop_in_an_image_folder_adds_no_image_twice(tmp_path):
    from project.data.files import ImageFolderDataModule

    images = write_image_folder(tmp_path / "images", {"a": 10, "b": 10})
    os.symlink("..", images / "a" / "loop")  # a/loop/a/loop/... would repeat every image
    os.symlink("0.png", images / "b" / "same-as-0.png")  # one file under two names
    module = ImageFolderDataModule(data_dir=str(images), split=Split(val_size=2, test_size=4))
    module.setup("fit")
    assert len(module.train_set) + len(module.val_set) + len(module.test_set) == 20


# -- refusals that existed before, now checked to write nothing ------------------------------------------------------


def test_a_config_key_that_does_not_exist(quick_args, run_dir, capsys):
    assert "learning_rate" in error_with_config("model:\n  learning_rate: 0.1\n", quick_args, run_dir, capsys)


def test_a_zero_batch_size(quick_args, run_dir, capsys):
    error = cli_error(["fit", *quick_args, "--data.batch_size=0"], capsys, root=run_dir)
    assert "error: data.batch_size must be a positive integer, got 0" in error


def test_labels_outside_the_class_range(tmp_path, quick_args, run_dir, capsys):
    from idx import synthetic_digits, write_idx_labels, write_mnist_folder

    root = write_mnist_folder(tmp_path / "data")
    _, labels = synthetic_digits(600, 0)
    labels[5] = 12
    write_idx_labels(root / "MNIST" / "raw" / "train-labels-idx1-ubyte", labels)
    args = [arg for arg in quick_args if not arg.startswith("--data.data_dir")]
    error = cli_error(["fit", *args, f"--data.data_dir={root}"], capsys, root=run_dir)
    assert "error: the training split of MNISTDataModule has labels [12] outside its 10 classes (0..9)" in error


def test_a_corrupt_image_file_in_an_image_folder(image_folder, run_dir, capsys):
    (image_folder / "square" / "3.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    assert "square/3.png" in cli_error(folder_args(image_folder), capsys, root=run_dir)


def test_images_the_network_cannot_take(image_folder, run_dir, capsys):
    error = cli_error(folder_args(image_folder, "--data.channels=3"), capsys, root=run_dir)
    assert "error: the data gives 3x28x28 images but the network takes 1x28x28" in error


def test_a_pretrained_checkpoint_of_another_architecture(quick_args, pretrained_checkpoint, run_dir, capsys):
    args = [*quick_args, f"--model.finetuning.pretrained={pretrained_checkpoint}", "--model.network.init_args.width=16"]
    error = cli_error(["fit", *args], capsys, root=run_dir)
    assert "its backbone does not match this network's" in error and "backbone.0.weight" in error


def test_a_file_that_is_not_a_checkpoint(quick_args, run_dir, capsys):
    fake = run_dir / "notes.ckpt"
    fake.write_text("hello")
    error = cli_error(["fit", *quick_args, f"--ckpt_path={fake}"], capsys, root=run_dir)
    assert "notes.ckpt is not a readable checkpoint" in error


@pytest.mark.slow
def test_max_epochs_below_the_resumed_checkpoints_epoch(quick_args, run_dir, capsys):
    run_cli(["fit", *quick_args, "--test_after_fit=false", "--trainer.max_epochs=3"])
    error = cli_error(["fit", *quick_args, "--ckpt_path=last", "--trainer.max_epochs=2"], capsys)
    assert "error: --trainer.max_epochs=2 is reached already" in error
    assert "raise --trainer.max_epochs to at least 4" in error


def test_an_image_folder_with_an_empty_class(tmp_path, run_dir, capsys):
    write_image_folder(tmp_path / "images", {"a": 5, "b": 5})
    (tmp_path / "images" / "c").mkdir()
    error = cli_error(folder_args(tmp_path / "images"), capsys, root=run_dir)
    assert "class folder c has no image files" in error


def test_missing_data_offline_stops_the_cli_with_the_clear_message(run_dir, monkeypatch, capsys):
    from torchvision import datasets

    monkeypatch.setattr(datasets.MNIST, "mirrors", ["http://127.0.0.1:9/"])
    error = cli_error(["fit", f"--data.data_dir={run_dir / 'nowhere'}"], capsys, root=run_dir)
    assert error.startswith("error: MNIST files not found: looked in ")
    assert "PROJECT_DATA_DIR" in error


def test_help_still_prints_the_usage(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["fit", "--help"])
    assert caught.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_a_monitored_metric_that_the_task_does_not_log(tmp_path, run_dir, capsys):
    data = write_regression_csv(tmp_path / "data", "train.csv", [str(i / 30) for i in range(30)])
    early_stopping = [
        "--trainer.callbacks+=lightning.pytorch.callbacks.EarlyStopping",
        "--trainer.callbacks.monitor=val/acc",
    ]
    args = ["fit", "--data=project.data.CSVRegressionDataModule", f"--data.data_dir={data}", "--data.split.val_size=4"]
    args += early_stopping
    error = cli_error(args, capsys, root=run_dir)
    assert "EarlyStopping monitors val/acc, which a regression task does not log" in error and "val/mse" in error
