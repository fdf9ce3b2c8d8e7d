"""Prediction on new image files (python -m project predict): the preprocessing of training, a CSV, bad files
named."""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest
import torch
from conftest import REPO_ROOT, write_test_images
from helpers import bound_task, run_script

from project.data import Loading, Split
from project.errors import UserInputError
from project.inference.prediction import Predictor
from project.inference.prediction_files import image_paths
from project.training.task_module import TaskModule


def predict_script(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(REPO_ROOT / "scripts" / "predict.py"), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def read_csv(path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_image_files_are_predicted_as_the_same_images_were_in_training(pretrained_checkpoint, fake_data_dir, tmp_path):
    from project.data import MNISTDataModule

    paths = write_test_images(fake_data_dir, tmp_path / "digits", 20)
    data = MNISTDataModule(data_dir=str(fake_data_dir), loading=Loading(eval_batch_size=20), split=Split(val_size=100))
    data.setup("test")
    images, _ = next(data.normalised_batches("test"))
    model = TaskModule.load_from_checkpoint(pretrained_checkpoint, map_location="cpu").eval()
    with torch.no_grad():
        expected = model(images).softmax(dim=1)
    rows, skipped = Predictor.load(pretrained_checkpoint).predict(paths)
    got = torch.tensor([[row[f"p_{digit}"] for digit in range(10)] for row in rows])
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    assert skipped == [] and [row["predicted"] for row in rows] == [str(int(i)) for i in expected.argmax(dim=1)]


def test_an_onnx_export_predicts_what_its_checkpoint_predicts(
    pretrained_checkpoint, exported_folder, fake_data_dir, tmp_path
):
    paths = write_test_images(fake_data_dir, tmp_path / "digits", 9)
    from_checkpoint, _ = Predictor.load(pretrained_checkpoint).predict(paths)
    from_onnx, _ = Predictor.load(exported_folder / "model.onnx").predict(paths, batch_size=4)
    assert [row["predicted"] for row in from_onnx] == [row["predicted"] for row in from_checkpoint]
    for onnx_row, checkpoint_row in zip(from_onnx, from_checkpoint, strict=True):
        assert onnx_row["p_3"] == pytest.approx(checkpoint_row["p_3"], abs=1e-5)


@pytest.mark.slow
def test_the_script_writes_one_row_per_image_and_names_the_files_it_skips(
    pretrained_checkpoint, fake_data_dir, tmp_path
):
    write_test_images(fake_data_dir, tmp_path / "digits" / "a", 3)
    write_test_images(fake_data_dir, tmp_path / "digits" / "b", 2)
    (tmp_path / "digits" / "broken.png").write_bytes(b"not a png")
    (tmp_path / "digits" / "notes.txt").write_text("not an image: not looked at")
    out = tmp_path / "predictions.csv"
    result = predict_script(str(pretrained_checkpoint), str(tmp_path / "digits"), "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "wrote 5 predictions" in result.stdout and "(1 files skipped)" in result.stdout
    assert f"skipped {tmp_path / 'digits' / 'broken.png'}: cannot be decoded" in result.stderr
    rows = read_csv(out)
    assert list(rows[0]) == ["path", "predicted", *[f"p_{digit}" for digit in range(10)]]
    assert [row["path"].split("digits/")[1] for row in rows] == [
        "a/000.png",
        "a/001.png",
        "a/002.png",
        "b/000.png",
        "b/001.png",
    ]
    assert all(abs(sum(float(row[f"p_{d}"]) for d in range(10)) - 1) < 1e-4 for row in rows)
    before = out.read_bytes()
    again = predict_script(str(pretrained_checkpoint), str(tmp_path / "digits" / "a"), "--out", str(out))
    assert again.returncode == 2 and f"error: --out {out} exists already" in again.stderr
    assert out.read_bytes() == before  # the first result is kept


def test_glob_patterns_and_files_are_inputs_too(fake_data_dir, tmp_path):
    paths = write_test_images(fake_data_dir, tmp_path / "digits", 4)
    assert image_paths([str(tmp_path / "digits" / "00[01].png"), str(paths[3])]) == [paths[0], paths[1], paths[3]]
    with pytest.raises(UserInputError, match="the pattern matches no file"):
        image_paths([str(tmp_path / "*.jpg")])
    with pytest.raises(UserInputError, match="no such file, folder or pattern"):
        image_paths([str(tmp_path / "missing.png")])


def test_nothing_readable_is_one_error_line_and_no_file(pretrained_checkpoint, tmp_path, capsys, monkeypatch):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "predictions.csv"
    code, _, stderr = run_script("predict.py", [str(pretrained_checkpoint), str(tmp_path / "broken.png"), "--out",
                                                str(out)], capsys, monkeypatch)  # fmt: skip
    assert code == 2 and not out.exists()
    assert stderr.strip().splitlines()[-1] == "error: none of the 1 files could be decoded: nothing to predict"
    code, _, stderr = run_script("predict.py", [str(pretrained_checkpoint), str(tmp_path), "--batch_size", "0"],
                                 capsys, monkeypatch)  # fmt: skip
    assert code == 2 and stderr.strip() == "error: batch_size: expected a positive integer, got 0"
    code, _, stderr = run_script("predict.py", [str(tmp_path / "nothing.ckpt"), str(tmp_path)], capsys, monkeypatch)
    assert code == 2 and stderr.startswith("error: ") and "Traceback" not in stderr


@pytest.mark.parametrize(
    ("task", "outputs", "expected"),
    [
        ("binary", [[2.0]], {"predicted": "positive", "p_positive": pytest.approx(0.8808, abs=1e-4)}),
        (
            "multilabel",
            [[3.0, -3.0]],
            {
                "predicted": "even",
                "p_even": pytest.approx(0.9526, abs=1e-4),
                "p_at_least_5": pytest.approx(0.0474, abs=1e-4),
            },
        ),
        ("regression", [[12.5]], {"predicted": 12.5}),
    ],
)
def test_each_task_says_what_it_predicts_in_words(task, outputs, expected):
    names = {"binary": ["other", "positive"], "multilabel": ["even", "at_least_5"], "regression": []}[task]
    tensor = torch.tensor(outputs)
    assert bound_task(task, tensor.shape[1]).prediction_rows(tensor, names) == [expected]
