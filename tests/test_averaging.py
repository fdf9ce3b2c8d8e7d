"""Averaged weights (EMA, SWA): what checkpoints hold, and that validation, test, evaluate, export, predict and resume
use the right weights."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers import bound_task, run_in_folder
from safetensors.torch import load_file

from project.cli import main, run_cli
from project.errors import UserInputError
from project.inference.evaluation import compute_report, data_module_from_checkpoint, predict
from project.inference.export import export_checkpoint
from project.inference.prediction import Predictor
from project.training import EMAWeights, SWAWeights
from project.training.checkpoints import read_checkpoint
from project.training.task_module import TaskModule
from project.trusted import trust

trust(__name__)  # its classes are named in configs (--trainer.callbacks+=...), as a user's own module's

TINY = ["--model.network.init_args.width=4", "--model.network.init_args.hidden_size=16"]
RUN = Path("logs") / "mnist" / "version_0" / "checkpoints"
DECAY = 0.9
"""A short memory, so that the average of a short run is far from its trained weights."""


class Recorder(L.Callback):
    """The trained weights after every optimizer step, the weights each validation ran with, its val/loss, and
    last.ckpt as the first epoch left it."""

    def __init__(self) -> None:
        self.steps: list[dict[str, torch.Tensor]] = []
        self.validated: list[dict[str, torch.Tensor]] = []
        self.val_losses: list[float] = []
        self.checkpoint_of_epoch_0: dict | None = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == 1:  # last.ckpt as saved at the end of epoch 0
            self.checkpoint_of_epoch_0 = read_checkpoint(Path(trainer.log_dir) / "checkpoints" / "last.ckpt")

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        self.steps.append({name: value.detach().clone() for name, value in pl_module.state_dict().items()})

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        if batch_idx == 0 and not trainer.sanity_checking:
            self.validated.append({name: value.detach().clone() for name, value in pl_module.state_dict().items()})

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.val_losses.append(trainer.callback_metrics["val/loss"].item())


def best_checkpoint(cli, folder: Path) -> Path:
    return folder / cli.trainer.checkpoint_callback.best_model_path


def recorder(cli) -> Recorder:
    return next(callback for callback in cli.trainer.callbacks if isinstance(callback, Recorder))


def expected_ema(steps: list[dict[str, torch.Tensor]], decay: float) -> dict[str, torch.Tensor]:
    """The EMA with warm-up, written out: the first update copies, then ``d = min(decay, (1 + n) / (10 + n))``."""
    average = {name: value.clone() for name, value in steps[0].items()}
    for n, weights in enumerate(steps[1:], start=1):
        d = min(decay, (1 + n) / (10 + n))
        average = {name: d * average[name] + (1 - d) * weights[name] for name in average}
    return average


def assert_close(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert actual.keys() == expected.keys()
    for name, value in expected.items():
        torch.testing.assert_close(actual[name], value, rtol=1e-5, atol=1e-6, msg=name)


def far_apart(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> bool:
    return max((first[name] - second[name]).abs().max().item() for name in first) > 1e-3


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory, fake_data_dir):
    """A 2-epoch run with EMA (decay 0.9, lr 0.01) and a Recorder: the CLI, its args and its folder."""
    folder = tmp_path_factory.mktemp("ema")
    args = [
        "--config=debug",
        f"--data.data_dir={fake_data_dir}",
        "--data.split.val_size=100",
        *TINY,
        "--model.optimizer.lr=0.01",
    ]
    previous = Path.cwd()
    os.chdir(folder)
    try:
        cli = run_cli(
            [
                "fit",
                *args,
                "--config=ema",
                f"--trainer.callbacks.decay={DECAY}",
                "--trainer.callbacks+=test_averaging.Recorder",
            ]
        )
    finally:
        os.chdir(previous)
    return cli, args, folder


def test_a_checkpoint_holds_the_ema_and_the_trained_weights_beside_it(ema_run):
    cli, _, folder = ema_run
    steps = recorder(cli).steps
    checkpoint = read_checkpoint(folder / RUN / "last.ckpt")
    assert len(steps) == 20
    assert_close(checkpoint["state_dict"], expected_ema(steps, DECAY))
    assert_close(checkpoint["current_model_state"], steps[-1])
    assert far_apart(checkpoint["state_dict"], checkpoint["current_model_state"])
    assert checkpoint["averaged_weights"] == {
        "method": "ema",
        "decay": DECAY,
        "warmup": True,
        "start_step": 0,
        "updates": 20,
    }


def test_validation_runs_with_the_average_and_training_with_the_trained_weights(ema_run):
    cli, _, folder = ema_run
    record = recorder(cli)
    assert len(record.validated) == 2
    assert_close(record.validated[-1], expected_ema(record.steps, DECAY))
    best = read_checkpoint(best_checkpoint(cli, folder))
    assert_close(dict(cli.model.state_dict()), best["state_dict"])  # the test after fit loaded the best average


def test_validate_and_test_with_ckpt_path_and_the_test_after_fit_use_the_average(ema_run, tmp_path):
    cli, args, folder = ema_run
    best = best_checkpoint(cli, folder)
    after_fit = cli.trainer.callback_metrics["test/loss"].item()
    validated = run_in_folder(folder, ["validate", *args, f"--ckpt_path={best}"])
    epoch = read_checkpoint(best)["epoch"]
    assert validated.trainer.callback_metrics["val/loss"].item() == pytest.approx(recorder(cli).val_losses[epoch])
    tested = run_in_folder(folder, ["test", *args, "--config=ema", f"--ckpt_path={best}"])
    assert tested.trainer.callback_metrics["test/loss"].item() == pytest.approx(after_fit)
    # The trained weights of the same checkpoint give another loss: the one above is the average's.
    checkpoint = read_checkpoint(best)
    checkpoint["state_dict"] = checkpoint.pop("current_model_state")
    del checkpoint["averaging_state"], checkpoint["averaged_weights"]
    torch.save(checkpoint, tmp_path / "current.ckpt")
    current = run_in_folder(folder, ["test", *args, f"--ckpt_path={tmp_path / 'current.ckpt'}"])
    assert current.trainer.callback_metrics["test/loss"].item() != pytest.approx(after_fit, abs=1e-4)


def network_weights(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name.removeprefix("network."): value for name, value in state_dict.items() if name.startswith("network.")}


def test_export_and_predict_use_the_average(ema_run, tmp_path):
    _, _, folder = ema_run
    path = folder / RUN / "last.ckpt"
    checkpoint = read_checkpoint(path)
    # (The ONNX and .pt2 files are checked against the same eager network by export itself: project.inference.export.)
    about = export_checkpoint(path, tmp_path / "model", formats=("safetensors",))
    assert about["averaged_weights"]["method"] == "ema"
    assert json.loads((tmp_path / "model" / "config.json").read_text())["averaged_weights"]["updates"] == 20
    exported = load_file(str(tmp_path / "model" / "model.safetensors"))
    assert_close(exported, network_weights(checkpoint["state_dict"]))
    assert far_apart(exported, network_weights(checkpoint["current_model_state"]))

    images = torch.rand(5, 1, 28, 28)
    average = TaskModule.from_checkpoint(checkpoint, path).eval()
    trained = TaskModule.from_checkpoint({**checkpoint, "state_dict": checkpoint["current_model_state"]}, path).eval()
    with torch.no_grad():
        expected, other = average(images), trained(images)
    predictor = Predictor.load(path)
    torch.testing.assert_close(predictor.run(images), expected)
    assert (predictor.run(images) - other).abs().max() > 1e-3


def test_evaluate_reports_the_average(ema_run, tmp_path, monkeypatch):
    from project.inference import evaluation

    _, _, folder = ema_run
    path = folder / RUN / "last.ckpt"
    seen = []

    def recorded(model, loader, task, *worst):
        seen.append(predict(model, loader, task, *worst))
        return seen[-1]

    monkeypatch.setattr(evaluation, "predict", recorded)  # the scores the report is made of
    evaluation.evaluate_checkpoint(path, "test", None, tmp_path / "report")
    report = json.loads((tmp_path / "report" / "metrics.json").read_text())
    checkpoint = read_checkpoint(path)
    data = data_module_from_checkpoint(checkpoint)
    data.prepare_data()
    data.setup("test")
    loader = list(data.normalised_batches("test"))

    def scores(state_dict: dict[str, torch.Tensor]) -> torch.Tensor:
        model = TaskModule.from_checkpoint({**checkpoint, "state_dict": state_dict}, path)
        return predict(model, loader, model.task).scores

    torch.testing.assert_close(seen[0].scores, scores(checkpoint["state_dict"]))
    assert (seen[0].scores - scores(checkpoint["current_model_state"])).abs().max() > 1e-3
    assert report["overall"] == pytest.approx(compute_report(seen[0], bound_task("multiclass", 10), [])["overall"])


def test_resuming_an_averaged_run_without_its_averaging_is_refused(ema_run, tmp_path, capsys):
    _, args, folder = ema_run
    shutil.copytree(folder / "logs", tmp_path / "logs")
    os.chdir(tmp_path)
    for other in ([], ["--config=swa"]):
        with pytest.raises(SystemExit) as caught:
            main(["fit", *args, *other, "--trainer.max_epochs=3", "--ckpt_path=last"])
        assert caught.value.code == 2
        error = capsys.readouterr().err.strip().splitlines()[-1]
        assert error.startswith("error: ") and "holds averaged weights" in error and "ema" in error


def test_an_swa_run_averages_the_weights_of_each_epochs_end_from_its_start_epoch(quick_args):
    epochs = ["--trainer.max_epochs=3", "--trainer.limit_train_batches=4", "--test_after_fit=false"]
    cli = run_cli(["fit", *quick_args, *TINY, *epochs, "--config=swa", "--trainer.callbacks+=test_averaging.Recorder"])
    record = recorder(cli)
    epoch_ends = [record.steps[3], record.steps[7], record.steps[11]]
    average = {name: (epoch_ends[1][name] + epoch_ends[2][name]) / 2 for name in epoch_ends[0]}
    checkpoint = read_checkpoint(RUN / "last.ckpt")
    assert_close(checkpoint["state_dict"], average)
    assert checkpoint["averaged_weights"] == {"method": "swa", "start_epoch": 1, "updates": 2}
    # Before the average starts, checkpoints and validation have the trained weights (not the initial ones);
    # then epoch 1 validates the average of its end (its own weights), epoch 2 that of both ends.
    assert "current_model_state" not in record.checkpoint_of_epoch_0
    assert "averaged_weights" not in record.checkpoint_of_epoch_0
    assert_close(record.checkpoint_of_epoch_0["state_dict"], epoch_ends[0])
    assert_close(record.validated[0], epoch_ends[0])
    assert_close(record.validated[1], epoch_ends[1])
    assert_close(record.validated[2], average)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (dict(decay=1.0), "EMAWeights.decay must lie in [0, 1)"),
        (dict(every_n_steps=0), "every_n_steps 1 or more"),
    ],
)
def test_bad_ema_settings_are_refused_in_one_line(arguments, message):
    with pytest.raises(UserInputError, match=message.replace("[", r"\[").replace(")", r"\)")):
        EMAWeights(**arguments)


def test_two_averages_at_once_are_refused(quick_args, capsys):
    with pytest.raises(SystemExit):
        main(["fit", *quick_args, *TINY, "--config=ema", "--config=swa"])
    assert "more than one weight averaging callback (ema, swa)" in capsys.readouterr().err
    assert SWAWeights(start_epoch=0).start_epoch == 0


def compare_whole_state(expected_path: Path, actual_path: Path) -> None:
    expected, actual = read_checkpoint(expected_path), read_checkpoint(actual_path)
    for key in ("state_dict", "current_model_state", "averaging_state"):
        assert actual[key].keys() == expected[key].keys(), key
        for name, value in expected[key].items():
            assert torch.equal(actual[key][name], value), f"{key}: {name} differs"
    assert actual["averaged_weights"] == expected["averaged_weights"]
    for name in ("EMAWeights", "SWAWeights"):
        assert actual["callbacks"].get(name) == expected["callbacks"].get(name)


AVERAGING = {
    "ema": ["--config=ema", f"--trainer.callbacks.decay={DECAY}"],
    "swa": ["--config=swa", "--trainer.callbacks.start_epoch=0"],
}


def test_an_interrupted_and_resumed_ema_run_ends_with_the_uninterrupted_runs_weights_and_average(
    tmp_path, fake_data_dir, monkeypatch
):
    from helpers import Interrupted
    from test_reliability import EXACT_CONFIG, EXACT_RUN, assert_same_training_state

    args = ["fit", "--test_after_fit=false", f"--config={EXACT_CONFIG}", f"--data.data_dir={fake_data_dir}"]
    args += [*TINY, *AVERAGING["ema"], "--trainer.max_epochs=2"]
    for name in ("straight", "resumed"):
        (tmp_path / name).mkdir()
    monkeypatch.chdir(tmp_path / "straight")
    run_cli(args)
    monkeypatch.chdir(tmp_path / "resumed")
    with pytest.raises(Interrupted):  # after step 13 of 20; last.ckpt holds step 12, 2 batches into epoch 1
        run_cli([*args, "--trainer.callbacks+=helpers.InterruptAtStep", "--trainer.callbacks.step=13"])
    run_cli([*args, "--ckpt_path=last"])
    straight, resumed = (tmp_path / name / EXACT_RUN / "checkpoints" / "last.ckpt" for name in ("straight", "resumed"))
    assert_same_training_state(straight, resumed)
    compare_whole_state(straight, resumed)


@pytest.mark.slow
@pytest.mark.parametrize("averaging", ["ema", "swa"])
def test_a_run_killed_mid_epoch_and_resumed_ends_with_the_uninterrupted_runs_weights_and_average(
    averaging, tmp_path, fake_data_dir
):
    from test_reliability import Runs, assert_same_training_state

    runs = Runs(tmp_path, fake_data_dir, [*TINY, *AVERAGING[averaging]], kill_at_step=17)
    killed = read_checkpoint(runs.last_checkpoint(runs.killed_dir))
    assert killed["global_step"] == 16 and "current_model_state" in killed
    resumed = runs.resume_copy(tmp_path / "resumed")
    straight = runs.last_checkpoint(runs.straight_dir)
    assert_same_training_state(straight, resumed)
    compare_whole_state(straight, resumed)
