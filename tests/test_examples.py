"""The worked examples under examples/ that are configuration only: each trains, resumes, evaluates and exports
from its own config, as its README says (the own network, which is code, is tests/test_own_code.py's)."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import write_image_folder
from helpers import directory_scalars, run_script

from project.cli import run_cli

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def example_data(name: str, fake_data_dir: Path, run_dir: Path, monkeypatch) -> list[str]:
    """The data options of the example's run: the generated MNIST files, or the arrays its script writes."""
    if name != "arrays":
        return [f"--data.data_dir={fake_data_dir}", "--data.split.val_size=100"]
    monkeypatch.setattr(sys, "argv", ["make_arrays.py", str(run_dir / "arrays"), "--count", "300"])
    runpy.run_path(str(EXAMPLES / "arrays" / "make_arrays.py"), run_name="__main__")
    return [f"--data.data_dir={run_dir / 'arrays'}"]


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("label_smoothing", marks=pytest.mark.slow),
        pytest.param("top3_accuracy", marks=pytest.mark.slow),
        "arrays",
    ],
)
def test_a_config_example_trains_resumes_evaluates_and_exports(name, fake_data_dir, run_dir, monkeypatch, capsys):
    args = [f"--config={EXAMPLES / name / 'config.yaml'}", "--config=debug"]
    args += example_data(name, fake_data_dir, run_dir, monkeypatch)
    run_cli(["fit", *args, "--trainer.max_epochs=1", "--test_after_fit=false"])
    last = run_dir / "logs" / name / "version_0" / "checkpoints" / "last.ckpt"
    first = torch.load(last, weights_only=True)
    run_cli(["fit", *args, "--trainer.max_epochs=2", "--test_after_fit=false", "--ckpt_path=last"])
    resumed = torch.load(last, weights_only=True)
    assert (first["epoch"], resumed["epoch"]) == (0, 1) and resumed["global_step"] == 2 * first["global_step"]
    assert resumed["hyper_parameters"]["task"] == first["hyper_parameters"]["task"]

    code, _, err = run_script("evaluate.py", [str(last), "--out", str(run_dir / "report")], capsys, monkeypatch)
    assert code == 0, err
    report = json.loads((run_dir / "report" / "metrics.json").read_text())
    assert ("acc_top3" in report["overall"]) == (name == "top3_accuracy")
    code, _, err = run_script("export.py", [str(last), "--out", str(run_dir / "export"), "--formats", "onnx"],
                              capsys, monkeypatch)  # fmt: skip
    assert code == 0, err
    about = json.loads((run_dir / "export" / "config.json").read_text())
    assert about["task_options"].get("label_smoothing") == (0.1 if name == "label_smoothing" else 0.0)


@pytest.mark.slow
def test_a_loss_of_your_own_trains_resumes_evaluates_exports_predicts_and_sweeps(
    fake_data_dir, run_dir, capsys, monkeypatch
):
    """examples/focal_loss: a task outside project/, named in a config and trusted, in every command."""
    monkeypatch.syspath_prepend(str(EXAMPLES.parent))  # found from the clone, as --trust finds it there
    trust = "--trust=examples.focal_loss.losses"
    args = [trust, f"--config={EXAMPLES / 'focal_loss' / 'config.yaml'}", "--config=debug"]
    args += [f"--data.data_dir={fake_data_dir}", "--data.split.val_size=100", "--test_after_fit=false"]
    run_cli(["fit", *args, "--trainer.max_epochs=1"])
    last = run_dir / "logs" / "focal_loss" / "version_0" / "checkpoints" / "last.ckpt"
    resumed = run_cli(["fit", *args, "--trainer.max_epochs=2", "--ckpt_path=last"])
    assert type(resumed.model.task).__name__ == "FocalLoss" and resumed.trainer.global_step == 20
    task = torch.load(last, weights_only=True)["hyper_parameters"]["task"]
    assert task == {
        "class_path": "examples.focal_loss.losses.FocalLoss",
        "init_args": {"gamma": 2.0, "label_smoothing": 0.0, "class_weights": None, "metrics": {}},
    }
    code, _, err = run_script("evaluate.py", [str(last), trust, "--out", str(run_dir / "report")], capsys, monkeypatch)
    assert code == 0, err
    code, _, err = run_script("export.py", [str(last), trust, "--out", str(run_dir / "export"), "--formats", "onnx"],
                              capsys, monkeypatch)  # fmt: skip
    assert code == 0, err
    from project.inference.prediction import Predictor

    assert type(Predictor.load(run_dir / "export" / "model.onnx").task).__name__ == "FocalLoss"
    write_image_folder(run_dir / "new", {"digits": 3}, mode="L", size=28)
    for model in (last, run_dir / "export" / "model.onnx"):
        out = run_dir / f"{model.suffix[1:]}.csv"
        code, _, err = run_script("predict.py", [str(model), str(run_dir / "new"), trust, "--out", str(out)], capsys,
                                  monkeypatch)  # fmt: skip
        assert code == 0 and len(out.read_text().splitlines()) == 1 + 3, err  # a header and a row per image
    scalars = directory_scalars(last.parents[1])
    assert {"train/loss_step", "val/loss", "val/acc"} <= set(scalars)  # in TensorBoard, as any task's
    spec = {"configs": ["debug", str(EXAMPLES / "focal_loss" / "config.yaml")], "trials": 1,
            "options": {"data.data_dir": str(fake_data_dir), "data.split.val_size": 100},
            "space": {"model.task.gamma": {"low": 0.5, "high": 2.0}}}  # fmt: skip
    (run_dir / "spec.yaml").write_text(yaml.safe_dump(spec))
    from project.sweeps import main as sweep_main

    sweep_main(["spec.yaml", trust])
    assert (run_dir / "logs" / "sweeps" / "spec" / "trials.csv").is_file()
