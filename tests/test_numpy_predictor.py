"""predict from an ONNX file without torch (project.inference.numpy_predictor): the rows of the torch path, to the
digit, in a process that imports neither torch nor Lightning nor the training code."""

from __future__ import annotations

import inspect
import json
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import REPO_ROOT, write_test_images
from helpers import bound_task
from PIL import Image

from project.errors import UserInputError
from project.inference.numpy_predictor import TASK_OPTIONS, TaskRows
from project.inference.prediction import Predictor
from project.inference.prediction_files import IMAGE_SUFFIXES, image_paths, predict_files, write_csv

HEAVY = ("torch", "torchvision", "lightning", "project.training", "project.data", "project.tasks", "project.reports")
UNUSED = ("project.sweeps", "project.reports.", "project.inference.serving", "project.inference.export",
          "project.inference.evaluation", "project.inference.model_card")  # fmt: skip
"""What predict uses in no case: the sweeps, the reports, the server, the exports and the evaluation."""


def test_predict_from_an_onnx_file_imports_neither_torch_nor_lightning(
    exported_folder, pretrained_checkpoint, fake_data_dir, tmp_path
):
    write_test_images(fake_data_dir, tmp_path / "digits", 3)
    models = {"folder": exported_folder, "onnx": exported_folder / "model.onnx", "checkpoint": pretrained_checkpoint}
    code = (  # the checkpoint last: the control, which loads them
        "import json, sys\n"
        "heavy, unused, models, images, out = json.loads(sys.argv[1])\n"
        "loaded = lambda: sorted(name for name in heavy if name in sys.modules)\n"
        "import project\n"
        "print('import project:', loaded())\n"
        "from project.__main__ import main\n"
        "for name, model in models.items():\n"
        "    main(['predict', model, images, '--out', f'{out}/{name}.csv'])\n"
        "    print(f'{name}:', loaded(), [module for module in sys.modules if module.startswith(tuple(unused))])\n"
    )
    arguments = json.dumps([HEAVY, UNUSED, {name: str(path) for name, path in models.items()}, str(tmp_path / "digits"),
                            str(tmp_path)])  # fmt: skip
    command = [sys.executable, "-c", code, arguments]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    said = [line for line in result.stdout.splitlines() if line.startswith(("import project:", "folder:", "onnx:",
                                                                            "checkpoint:"))]  # fmt: skip
    assert said[:3] == ["import project: []", "folder: [] []", "onnx: [] []"]
    assert said[3] == "checkpoint: ['lightning', 'project.data', 'project.tasks', 'project.training', 'torch', " \
                      "'torchvision'] []"  # fmt: skip
    assert (tmp_path / "folder.csv").read_text() == (tmp_path / "onnx.csv").read_text()


def images_of_every_kind(real_data_dir, folder):
    """Real MNIST test digits as PNG (decoded directly by the torch path), as 28x28 JPEG, as 40x40 RGB JPEG and
    16x16 RGBA PNG (converted and resized), and a file that cannot be decoded."""
    paths = write_test_images(real_data_dir, folder, 24)
    for index, path in enumerate(paths[:16]):
        with Image.open(path) as image:
            if index % 3 == 0:
                image.save(path.with_suffix(".jpg"), quality=90)
            elif index % 3 == 1:
                image.convert("RGB").resize((40, 40)).save(path.with_name(f"{path.stem}_rgb.jpg"))
            else:
                image.convert("RGBA").resize((16, 16)).save(path.with_name(f"{path.stem}_rgba.png"))
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    return image_paths([str(folder)])


def test_the_torch_free_path_writes_the_csv_of_the_torch_path_on_real_images(
    exported_folder, pretrained_checkpoint, real_data_dir, tmp_path, monkeypatch
):
    paths = images_of_every_kind(real_data_dir, tmp_path / "digits")
    through_torch, skipped = Predictor.load(exported_folder).predict(paths, batch_size=16)  # ONNX in torch tensors
    write_csv(through_torch, tmp_path / "torch.csv")
    from_checkpoint, _ = Predictor.load(pretrained_checkpoint).predict(paths, batch_size=16)
    with monkeypatch.context() as patched:  # the torch path is not there: the rows are the torch-free path's
        patched.setattr(Predictor, "load", lambda *args: pytest.fail("the torch path ran"))
        for name, model in (("folder", exported_folder), ("onnx", exported_folder / "model.onnx")):
            said = []
            count, skipped_here = predict_files(model, [str(tmp_path / "digits")], tmp_path / f"{name}.csv", 16,
                                                skipping=said.append)  # fmt: skip
            assert (tmp_path / f"{name}.csv").read_text() == (tmp_path / "torch.csv").read_text()
            assert skipped_here == said == skipped and count == len(paths) - 1
    assert [row["predicted"] for row in through_torch] == [row["predicted"] for row in from_checkpoint]
    for row, checkpoint_row in zip(through_torch, from_checkpoint, strict=True):
        assert [row[f"p_{d}"] for d in range(10)] == pytest.approx([checkpoint_row[f"p_{d}"] for d in range(10)],
                                                                   abs=1e-5)  # fmt: skip
    edited = tmp_path / "edited"  # negative control: another normalisation gives other digits
    shutil.copytree(exported_folder, edited)
    config = json.loads((edited / "config.json").read_text())
    config["preprocessing"]["mean"] = [value + 0.01 for value in config["preprocessing"]["mean"]]
    (edited / "config.json").write_text(json.dumps(config))
    predict_files(edited, [str(tmp_path / "digits")], tmp_path / "edited.csv", 16, skipping=lambda line: None)
    assert (tmp_path / "edited.csv").read_text() != (tmp_path / "torch.csv").read_text()


@pytest.mark.parametrize("task", ["multiclass", "binary", "multilabel", "regression"])
def test_the_rows_of_each_task_are_its_torch_rows_to_the_digit(task, tmp_path):
    outputs = torch.randn(300, 4, generator=torch.Generator().manual_seed(0)) * 6
    outputs[:5] = torch.tensor([0.0, 0.0, 0.0, 0.0])  # ties, and logits exactly at the threshold
    width, names = {"binary": (1, ["no", "yes"]), "regression": (1, [])}.get(task, (4, ["a", "b", "c", "d"]))
    outputs = outputs[:, :width].contiguous()
    for threshold in (0.5, 0.7) if task in ("binary", "multilabel") else (0.5,):
        options = {"threshold": threshold} if threshold != 0.5 else {}
        write_csv(bound_task(task, width, **options).prediction_rows(outputs, names), tmp_path / "torch.csv")
        write_csv(TaskRows(task, names, threshold)(outputs.numpy()), tmp_path / "numpy.csv")
        assert (tmp_path / "numpy.csv").read_text() == (tmp_path / "torch.csv").read_text()
        (tmp_path / "torch.csv").unlink(), (tmp_path / "numpy.csv").unlink()
    if task in ("binary", "multilabel"):  # negative control: the threshold changes decisions
        assert TaskRows(task, names, 0.7)(outputs.numpy()) != TaskRows(task, names, 0.5)(outputs.numpy())


def test_the_tasks_and_suffixes_it_knows_are_the_projects():
    from torchvision.datasets.folder import IMG_EXTENSIONS

    import project.tasks

    for class_path, options in TASK_OPTIONS.items():
        cls = getattr(project.tasks, class_path.rsplit(".", 1)[1])
        assert tuple(inspect.signature(cls).parameters) == options
    assert IMAGE_SUFFIXES == IMG_EXTENSIONS


def test_a_model_it_does_not_take_goes_through_torch_and_is_refused_there(
    exported_folder, fake_data_dir, tmp_path, monkeypatch
):
    images = [str(path) for path in write_test_images(fake_data_dir, tmp_path / "digits", 2)]
    edited = tmp_path / "edited"
    shutil.copytree(exported_folder, edited)
    config = json.loads((edited / "config.json").read_text())
    (edited / "config.json").write_text(json.dumps({**config, "task_class": "subprocess.run"}))
    with pytest.raises(UserInputError, match=r"config.json names the task subprocess.run, which is not allowed"):
        predict_files(edited, images, tmp_path / "out.csv")
    (edited / "model.onnx").write_bytes(b"not onnx")  # a corrupt file: the torch path's one line
    (edited / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserInputError, match=r"model.onnx is not a readable ONNX model"):
        predict_files(edited, images, tmp_path / "out.csv")
    assert not (tmp_path / "out.csv").exists()
    loaded = []  # MNIST style (the digit made MNIST's) is the torch path's; without it, the folder is not loaded there
    real_load = Predictor.load
    monkeypatch.setattr(Predictor, "load", lambda *args: loaded.append(args) or real_load(*args))
    predict_files(exported_folder, images, tmp_path / "plain.csv")
    predict_files(exported_folder, images, tmp_path / "style.csv", mnist_style=True)
    assert loaded == [(exported_folder, True)]


def test_without_onnxruntime_a_folder_predicts_through_its_safetensors_network(
    exported_folder, fake_data_dir, tmp_path, monkeypatch
):
    import importlib.util

    images = [str(path) for path in write_test_images(fake_data_dir, tmp_path / "digits", 3)]
    predict_files(exported_folder, images, tmp_path / "onnx.csv")
    real_find_spec, real_load, runs = importlib.util.find_spec, Predictor.load, []

    def find_spec(name, *args):
        return None if name == "onnxruntime" else real_find_spec(name, *args)

    def load(*args):
        predictor = real_load(*args)
        runs.append(predictor.runs)
        return predictor

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    monkeypatch.setattr(Predictor, "load", load)
    predict_files(exported_folder, images, tmp_path / "weights.csv")
    assert runs == ["model.safetensors"]
    onnx, weights = (read_rows(tmp_path / name) for name in ("onnx.csv", "weights.csv"))
    assert [row["predicted"] for row in weights] == [row["predicted"] for row in onnx]
    assert [float(row["p_3"]) for row in weights] == pytest.approx([float(row["p_3"]) for row in onnx], abs=1e-5)


def read_rows(path):
    import csv

    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))
