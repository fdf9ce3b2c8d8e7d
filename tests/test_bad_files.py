"""Files that are data, refused or skipped in one line: a picture that declares too many pixels, a corrupt ONNX file
or config.json, an export into a dangling link, CSVs with a huge field or a NUL byte, thousands of missing images or
paths out of their folder, cells a spreadsheet would run, weights of the wrong kind, MNIST style for RGB images, and a
resume that redefines its labels."""

from __future__ import annotations

import csv
import struct
import zlib
from pathlib import Path

import pytest
import torch
from conftest import write_image_folder
from helpers import cli_error, run_script

from project.cli import run_cli
from project.errors import UserInputError


def one_error_line(script: str, args: list[str], capsys, monkeypatch) -> str:
    """``scripts/SCRIPT ARGS`` ends with exit status 2 and one ``error:`` line, no traceback: the line."""
    code, _, err = run_script(script, args, capsys, monkeypatch)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and "Traceback" not in err and len(errors) == 1, err[-3000:]
    return errors[0]


def png_declaring(path: Path, width: int, height: int) -> Path:
    """A PNG whose header declares ``width`` x ``height`` pixels (its data holds almost none): a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    chunks = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunks)
    return path


def test_prediction_names_and_skips_a_picture_that_declares_too_many_pixels(
    pretrained_checkpoint, tmp_path, capsys, monkeypatch
):
    images = write_image_folder(tmp_path / "images", {"a": 2}, mode="L", size=28)
    bomb = png_declaring(images / "a" / "bomb.png", 50_000, 50_000)
    out = tmp_path / "predictions.csv"
    code, stdout, stderr = run_script("predict.py", [str(pretrained_checkpoint), str(images), "--out", str(out)],
                                      capsys, monkeypatch)  # fmt: skip
    assert code == 0 and "Traceback" not in stderr, stderr[-3000:]
    assert f"skipped {bomb}: cannot be decoded (Image size (2500000000 pixels) exceeds limit" in stderr
    assert "wrote 2 predictions" in stdout


def test_a_corrupt_onnx_file_or_a_truncated_model_json_is_one_error_line(
    exported_folder, tmp_path, image_folder, capsys, monkeypatch
):
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "model.onnx").write_bytes((exported_folder / "model.onnx").read_bytes()[:300])
    (corrupt / "config.json").write_text((exported_folder / "config.json").read_text())
    error = one_error_line("predict.py", [str(corrupt / "model.onnx"), str(image_folder)], capsys, monkeypatch)
    assert "model.onnx is not a readable ONNX model (truncated?)" in error
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    (truncated / "model.onnx").write_bytes((exported_folder / "model.onnx").read_bytes())
    (truncated / "config.json").write_text((exported_folder / "config.json").read_text()[:200])
    error = one_error_line("predict.py", [str(truncated / "model.onnx"), str(image_folder)], capsys, monkeypatch)
    assert "config.json is not the config.json python -m project export writes (truncated or edited?)" in error


def test_export_into_a_dangling_link_is_refused_and_writes_nothing(
    pretrained_checkpoint, tmp_path, capsys, monkeypatch
):
    link = tmp_path / "out"
    link.symlink_to(tmp_path / "nowhere")
    args = [str(pretrained_checkpoint), "--out", str(link), "--formats", "pt2"]
    error = one_error_line("export.py", args, capsys, monkeypatch)
    assert f"{link} already exists: give another --out" in error
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out"]


def test_prediction_cells_that_a_spreadsheet_would_run_are_escaped(pretrained_checkpoint, tmp_path, monkeypatch):
    from project.inference.prediction import Predictor
    from project.inference.prediction_files import image_paths, write_csv

    folder = write_image_folder(tmp_path / "images", {"a": 1}, mode="L", size=28) / "a"
    names = ("=HYPERLINK(1).png", "+1.png", "-1.png", "@SUM(1).png")
    for name in names:
        (folder / name).write_bytes((folder / "0.png").read_bytes())
    monkeypatch.chdir(folder)  # relative inputs: the paths in the CSV start with the files' names
    rows, _ = Predictor.load(pretrained_checkpoint).predict(image_paths(["."]))
    write_csv(rows, tmp_path / "predictions.csv")
    with (tmp_path / "predictions.csv").open(newline="") as file:
        cells = [row["path"] for row in csv.DictReader(file)]
    assert sorted(cells) == sorted(["0.png", *(f"'{name}" for name in names)])


def write_csv_rows(folder: Path, rows: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.csv").write_text("image,target\n" + "".join(f"{row}\n" for row in rows))
    return folder


def csv_args(folder: Path, *more: str) -> list[str]:
    return ["fit", "--data=project.data.CSVRegressionDataModule", f"--data.data_dir={folder}",
            "--data.split.val_size=2", "--config=debug", *more]  # fmt: skip


def test_a_csv_with_a_field_beyond_the_csv_modules_limit_is_one_error_line(tmp_path, run_dir, capsys):
    folder = write_csv_rows(tmp_path / "data", ["a.png,1", f"{'x' * 140_000}.png,2"])
    message = cli_error(csv_args(folder), capsys, root=run_dir)
    assert "train.csv near line 3: not a CSV file this can read (field larger than field limit (131072))" in message


@pytest.mark.parametrize(
    ("module", "lines", "where", "cell"),
    [
        ("CSVRegressionDataModule", ["image,target", "a.png,1", "b\0.png,2"], "line 3", "'b\\x00.png'"),
        ("CSVMultilabelDataModule", ["image,c\0t,dog", "a.png,1,0", "b.png,0,1"], "line 1", "'c\\x00t'"),
    ],
    ids=["in an image path", "in a label's name"],
)
def test_a_nul_byte_in_a_csv_is_one_error_line_naming_the_file_and_its_line(
    module, lines, where, cell, tmp_path, run_dir, capsys
):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "train.csv").write_text("".join(f"{line}\n" for line in lines))
    args = [
        "fit",
        f"--data=project.data.{module}",
        f"--data.data_dir={folder}",
        "--data.split.val_size=1",
        "--config=debug",
    ]
    message = cli_error(args, capsys, root=run_dir)
    assert f"train.csv {where}: not a CSV file this can read (a NUL byte in {cell})" in message


def test_a_csv_naming_thousands_of_missing_images_names_the_first_few_and_the_count(tmp_path, run_dir, capsys):
    folder = write_csv_rows(tmp_path / "data", [f"missing_{index}.png,{index % 7}" for index in range(20_000)])
    message = cli_error(csv_args(folder), capsys, root=run_dir)
    assert "20000 images cannot be decoded: " in message and "; and 19,995 more" in message
    assert len(message) < 2_000  # it was 2,960,037 characters


@pytest.mark.parametrize("where", ["absolute", "parent", "link"])
def test_csv_image_paths_out_of_the_data_folder_are_refused_unless_allowed(where, tmp_path, run_dir, capsys):
    outside = write_image_folder(tmp_path / "outside", {"a": 12}, mode="L", size=28) / "a"
    folder = tmp_path / "data"
    folder.mkdir()
    inside = write_image_folder(folder / "images", {"a": 11}, mode="L", size=28) / "a"
    rows = [f"images/a/{index}.png,{index}" for index in range(11)]
    if where == "link":
        (folder / "images" / "a" / "link.png").symlink_to(outside / "0.png")
    named = {"absolute": str(outside / "0.png"), "parent": "../outside/a/0.png", "link": "images/a/link.png"}[where]
    write_csv_rows(folder, [*rows, f"{named},11"])
    message = cli_error(csv_args(folder), capsys, root=run_dir)
    assert "train.csv line 13: the image" in message and f"lies outside {folder.resolve()}" in message
    assert "--data.init_args.allow_paths_outside true" in message
    assert inside.is_dir()
    run_cli([*csv_args(folder, "--data.init_args.allow_paths_outside=true", "--trainer.max_epochs=1"),
             "--test_after_fit=false"])  # fmt: skip


@pytest.mark.parametrize("dtype", [torch.int64, torch.uint8, torch.bool])
def test_pretrained_weights_of_integers_are_refused_through_the_command_line(
    dtype, quick_args, pretrained_checkpoint, run_dir, tmp_path, capsys
):
    from safetensors.torch import save_file

    weights = torch.load(pretrained_checkpoint, weights_only=True)["state_dict"]
    path = tmp_path / "integers.safetensors"
    save_file({name: tensor.to(dtype) for name, tensor in weights.items()}, str(path))
    message = cli_error(["fit", *quick_args, f"--model.finetuning.pretrained={path}"], capsys, root=run_dir)
    assert f"other kinds of values: backbone.0.bias: {dtype} in the file, torch.float32 in the network" in message


def test_mnist_style_for_rgb_images_is_refused_when_training_as_when_predicting(image_folder, run_dir, capsys):
    args = ["fit", "--config=finetune_folder.yaml", "--config=debug", f"--data.data_dir={image_folder}",
            "--data.init_args.channels=3", "--model.network.init_args.in_channels=3",
            "--data.init_args.mnist_style=true"]  # fmt: skip
    message = cli_error(args, capsys, root=run_dir)
    assert "MNIST-style preprocessing makes greyscale digits, as MNIST's are: it is for images of 1 channel" in message


LABELS = ["--data.labels.label_sets={even: [0, 2, 4, 6, 8], at_least_5: [5, 6, 7, 8, 9]}"]


@pytest.mark.slow
def test_a_resume_with_redefined_or_reordered_labels_is_refused_naming_label_sets(quick_args, run_dir, capsys):
    run_cli(["fit", *quick_args, *LABELS, "--trainer.max_epochs=1", "--test_after_fit=false"])
    for other in (
        "--data.labels.label_sets={even: [0, 2, 4, 6, 8], small: [0, 1, 2, 3, 4]}",  # renamed and redefined
        "--data.labels.label_sets={at_least_5: [5, 6, 7, 8, 9], even: [0, 2, 4, 6, 8]}",  # the outputs swapped
    ):
        message = cli_error(["fit", *quick_args, other, "--ckpt_path=last", "--trainer.max_epochs=2"], capsys)
        assert "these options cannot change on resume: data.labels.label_sets {" in message
        assert "(the run has {'even': [0, 2, 4, 6, 8], 'at_least_5': [5, 6, 7, 8, 9]})" in message


def test_a_resume_from_multiclass_to_labels_names_label_sets_and_what_decides_the_task(quick_args, run_dir, capsys):
    run_cli(["fit", *quick_args, "--trainer.max_epochs=1", "--test_after_fit=false"])
    message = cli_error(["fit", *quick_args, *LABELS, "--ckpt_path=last", "--trainer.max_epochs=2"], capsys)
    assert message.index("data.labels.label_sets {'even'") < message.index("model.task.class_path")
    expected = "model.task.class_path 'project.tasks.Multilabel' (the run has 'project.tasks.Multiclass'; set by"
    assert expected in message


@pytest.mark.slow
def test_a_lora_checkpoint_tested_without_the_lora_config_says_so(quick_args, pretrained_checkpoint, run_dir, capsys):
    pytest.importorskip("peft")
    lora = ["--config=lora", f"--model.finetuning.pretrained={pretrained_checkpoint}", "--model.lora.rank=2"]
    run_cli(["fit", *quick_args, *lora, "--trainer.max_epochs=1", "--test_after_fit=false"])
    message = cli_error(["test", *quick_args, "--ckpt_path=last"], capsys)
    assert "holds LoRA adapters (model.lora {'rank': 2" in message and "this model has none" in message
    assert "--config lora.yaml" in message


def test_weights_of_the_right_names_and_shapes_but_integers_are_refused_by_the_library_loader(tmp_path):
    import torchvision

    from project.networks.library import LibraryNetwork

    state = {name: tensor.to(torch.int64) for name, tensor in torchvision.models.resnet18().state_dict().items()}
    torch.save(state, tmp_path / "resnet18.pth")
    with pytest.raises(UserInputError, match=r"other kinds of values \['bn1.bias: torch.int64 in the file"):
        LibraryNetwork("torchvision", "resnet18", num_outputs=2, weights=str(tmp_path / "resnet18.pth"))
