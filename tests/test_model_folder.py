"""The model folder of python -m project export: model.safetensors, config.json, model.onnx and a README.md model
card; loaded back by project.load and predict without pickle; pushed to the Hugging Face Hub (up to the network)."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
import torch
from conftest import write_test_images
from helpers import directory_scalars, run_script

import project
from project.errors import UserInputError
from project.inference.export import export_checkpoint
from project.inference.prediction import Predictor
from project.training.task_module import TaskModule


def card_metadata(folder) -> dict:
    from huggingface_hub import ModelCard

    return ModelCard.load(folder / "README.md").data.to_dict()


def test_a_model_folder_holds_weights_config_onnx_and_a_card(exported_folder):
    assert {"model.safetensors", "config.json", "model.onnx", "README.md"} <= {
        p.name for p in exported_folder.iterdir()
    }
    config = json.loads((exported_folder / "config.json").read_text())
    assert config["network"]["class_path"] == "project.networks.ConvNet"
    assert config["network"]["init_args"]["num_outputs"] == config["num_outputs"] == 10
    assert config["preprocessing"]["class_names"] == [str(digit) for digit in range(10)]
    assert config["task_class"] == "project.tasks.Multiclass" and config["outputs"].startswith("logits")
    assert set(config["largest_difference_from_the_checkpoint"]) == {"model.onnx", "model.pt2"}


def test_the_card_holds_the_metrics_the_run_logged_as_evaluation_results(exported_folder, pretrained_checkpoint):
    logged = directory_scalars(pretrained_checkpoint.parent.parent)  # what TensorBoard shows for the run
    meta = card_metadata(exported_folder)
    assert meta["library_name"] == "pytorch" and "pytorch-lightning" in meta["tags"] and meta["datasets"] == ["mnist"]
    (result,) = meta["model-index"][0]["results"]  # the pretrained run tested nothing: its validation only
    assert result["dataset"]["split"] == "validation" and result["task"]["type"] == "image-classification"
    values = {metric["name"]: metric["value"] for metric in result["metrics"]}
    assert values["val/acc"] == pytest.approx(logged["val/acc"][-1][1]) and "accuracy" in meta["metrics"]
    assert values.keys() == {tag for tag in logged if tag.startswith("val/")}
    card = (exported_folder / "README.md").read_text()
    for section in ("Model details", "Intended use", "Bias, risks and limitations", "How to load", "Training data",
                    "Training settings", "Evaluation"):  # fmt: skip
        assert f"\n## {section}\n" in card
    assert "project.load(" in card and "onnxruntime" in card and "python -m project serve" in card
    assert "learning rate: 0.01" in card and "batch size:" in card and "random weights (trained from scratch)" in card


def test_a_checkpoint_outside_its_run_folder_gets_a_card_that_claims_no_metric(pretrained_checkpoint, tmp_path):
    alone = tmp_path / "somewhere" / "checkpoints" / "model.ckpt"  # no run folder's logs, another name than the best
    alone.parent.mkdir(parents=True)
    shutil.copy(pretrained_checkpoint, alone)
    config = export_checkpoint(alone, tmp_path / "model", ("safetensors",))
    assert config["metrics"] == []
    assert "model-index" not in card_metadata(tmp_path / "model")
    assert "No metric measured by the run was found" in (tmp_path / "model" / "README.md").read_text()


def test_project_load_gives_the_checkpoint_network_ready_to_predict(exported_folder, pretrained_checkpoint):
    model = project.load(exported_folder)
    expected = TaskModule.load_from_checkpoint(pretrained_checkpoint, map_location="cpu").network.eval()
    images = torch.randn(5, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    assert not model.network.training and model.runs == "model.safetensors"
    with torch.no_grad():
        torch.testing.assert_close(model.network(images), expected(images), atol=0, rtol=0)
        expected.head.bias.add_(1.0)  # negative control: another network's outputs differ
        assert not torch.allclose(model.network(images), expected(images))


def test_predict_from_the_folder_equals_predict_from_the_checkpoint(
    exported_folder, pretrained_checkpoint, fake_data_dir, tmp_path, capsys, monkeypatch
):
    paths = write_test_images(fake_data_dir, tmp_path / "digits", 9)
    from_checkpoint, _ = Predictor.load(pretrained_checkpoint).predict(paths)
    from_weights, _ = project.load(exported_folder).predict(paths)
    from_onnx = Predictor.load(exported_folder)  # the folder: ONNX first, when onnxruntime is there
    assert from_onnx.runs == "model.onnx (onnxruntime)" and from_onnx.network is None
    assert from_weights == from_checkpoint
    for onnx_row, row in zip(from_onnx.predict(paths)[0], from_checkpoint, strict=True):
        assert onnx_row["predicted"] == row["predicted"] and onnx_row["p_3"] == pytest.approx(row["p_3"], abs=1e-5)
    out = tmp_path / "folder.csv"
    code, _, stderr = run_script("predict.py", [str(exported_folder), *map(str, paths), "--out", str(out)], capsys,
                                 monkeypatch)  # fmt: skip
    assert code == 0, stderr
    predicted = [line.split(",")[1] for line in out.read_text().splitlines()[1:]]
    assert predicted == [row["predicted"] for row in from_checkpoint]


def edited_folder(exported_folder, tmp_path, **changes) -> object:
    folder = tmp_path / "edited"
    shutil.copytree(exported_folder, folder)
    (folder / "model.onnx").unlink()  # the safetensors network is what runs
    config = json.loads((folder / "config.json").read_text())
    for key, value in changes.items():
        if key == "network_class":
            config["network"]["class_path"] = value
        elif key == "network_arguments":
            config["network"]["init_args"].update(value)
        elif key == "whole":
            config = value
        else:
            config[key] = value
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize(
    ("change", "refusal"),
    [
        ({"network_class": "os.system"}, "config.json names the network os.system, which is not allowed here"),
        ({"network_class": "collections.OrderedDict"}, "names the network collections.OrderedDict, which is not"),
        ({"task_class": "subprocess.run"}, "config.json names the task subprocess.run, which is not allowed here"),
        ({"network_arguments": {"bogus": 1}}, "its network arguments do not build project.networks.ConvNet"),
        ({"whole": ["network", "preprocessing", "task_class", "task_options", "num_outputs"]}, "holds a list, not an"),
        ({}, None),  # negative control: the folder as written loads
    ],
)
def test_a_config_naming_code_or_an_untrusted_class_is_refused_in_one_line(
    exported_folder, tmp_path, change, refusal, capsys, monkeypatch
):
    folder = edited_folder(exported_folder, tmp_path, **change)
    if refusal is None:
        assert project.load(folder).network is not None
        return
    with pytest.raises(UserInputError, match=refusal.replace("(", r"\(")):
        project.load(folder)
    image = write_test_images_once(tmp_path)
    code, _, stderr = run_script("predict.py", [str(folder), str(image)], capsys, monkeypatch)
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert code == 2 and "Traceback" not in stderr and len(errors) == 1 and refusal in errors[0]


def write_test_images_once(tmp_path):
    from PIL import Image

    Image.new("L", (28, 28)).save(tmp_path / "blank.png")
    return tmp_path / "blank.png"


def test_a_truncated_model_safetensors_is_one_error_line(exported_folder, tmp_path, capsys, monkeypatch):
    folder = edited_folder(exported_folder, tmp_path)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    image = write_test_images_once(tmp_path)
    code, _, stderr = run_script("predict.py", [str(folder), str(image), "--out", str(tmp_path / "p.csv")],
                                 capsys, monkeypatch)  # fmt: skip
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert code == 2 and "Traceback" not in stderr and len(errors) == 1, stderr[-2000:]
    assert "model.safetensors: not a readable safetensors file" in errors[0]
    assert not (tmp_path / "p.csv").exists()


def test_push_to_hub_creates_the_repo_and_uploads_the_whole_folder(
    pretrained_checkpoint, tmp_path, capsys, monkeypatch
):
    from huggingface_hub import HfApi

    calls = []

    def create_repo(self, repo_id, **options):
        calls.append(("create_repo", repo_id, options))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, **options):
        calls.append(("upload_folder", options["repo_id"], sorted(p.name for p in tmp_path.joinpath("m").iterdir())))
        assert options["folder_path"] == str(tmp_path / "m")

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    args = [str(pretrained_checkpoint), "--out", str(tmp_path / "m"), "--formats", "safetensors"]
    code, stdout, stderr = run_script("export.py", [*args, "--push_to_hub", "someone/mnist-convnet"], capsys,
                                      monkeypatch)  # fmt: skip
    assert code == 0, stderr
    assert calls == [
        ("create_repo", "someone/mnist-convnet", {"repo_type": "model", "exist_ok": True, "private": False}),
        ("upload_folder", "someone/mnist-convnet", ["README.md", "config.json", "model.safetensors"]),
    ]
    assert "pushed" in stdout and "hf_not_a_real_token" not in stdout + stderr


def test_a_push_without_huggingface_hub_or_with_a_bad_repo_id_is_one_line_before_any_work(
    pretrained_checkpoint, tmp_path, capsys, monkeypatch
):
    args = [str(pretrained_checkpoint), "--out", str(tmp_path / "m")]
    code, _, stderr = run_script("export.py", [*args, "--push_to_hub", "no-owner"], capsys, monkeypatch)
    assert (
        code == 2
        and stderr.strip() == "error: push_to_hub: 'no-owner' is not a Hub repository id (user-or-organisation/name)"
    )
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # as if not installed
    code, _, stderr = run_script("export.py", [*args, "--push_to_hub", "a/b"], capsys, monkeypatch)
    assert code == 2 and stderr.strip() == (
        'error: --push_to_hub uploads through huggingface_hub, which is not installed: pip install -e ".[hub]"'
    )
    assert not (tmp_path / "m").exists()
