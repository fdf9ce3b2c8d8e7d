"""Learning-rate schedules: each shape, the logged learning rate, exact resume, rescaling on resume, refusals."""

from __future__ import annotations

import copy
import io
import itertools
import shutil
from functools import partial
from pathlib import Path

import pytest
import torch
from helpers import Interrupted, RecordLR, cli_error, directory_scalars, run_in_folder
from test_reliability import EXACT_CONFIG, EXACT_RUN, assert_same_training_state

from project.cli import run_cli
from project.errors import UserInputError
from project.networks import ConvNet
from project.training import TaskModule
from project.training.finetuning import FineTuning
from project.training.lr_factor import LRFactor
from project.training.schedules import (
    Constant,
    Cosine,
    Linear,
    OneCycle,
    PlannedRun,
    PlannedSchedule,
    RunSteps,
    Steps,
    replan_on_resume,
    steps_before_fit,
)
from project.training.torch_schedulers import torch_scheduler_config

SCHEDULES = {"cosine": Cosine, "linear": Linear, "step": Steps, "onecycle": OneCycle, "none": Constant}


def planned(kind: str, total: int, per_epoch: int, frozen: int = 0, **options) -> list[LRFactor]:
    """The factors (backbone's, head's) of the project's schedule ``kind`` with ``options``, planned for a run of
    ``total`` steps of ``per_epoch`` an epoch, the backbone frozen for its first ``frozen`` steps."""
    groups = [{"name": name, "params": [torch.zeros(1, requires_grad=True)]} for name in ("backbone", "head")]
    schedule = SCHEDULES[kind](torch.optim.SGD(groups, lr=1.0), **options)
    schedule.plan(RunSteps(total, per_epoch, {"backbone": frozen}))
    return schedule.lr_lambdas


# -- the shapes, as functions of the optimizer step ----------------------------------------------------------------


def test_cosine_warms_up_linearly_then_falls_to_its_floor_at_the_last_step():
    factor = LRFactor(100, "cosine", warmup_fraction=0.1, min_lr_fraction=0.1)
    assert [factor(step) for step in (0, 5, 10)] == [0.0, 0.5, 1.0]  # warm-up ends at step 10
    assert factor(55) == pytest.approx(0.1 + 0.9 * 0.5)  # half way down the half cosine
    assert factor(100) == pytest.approx(0.1) and factor(99) > 0.1  # the floor, one step past the last
    decay = [factor(step) for step in range(10, 101)]
    assert all(later < earlier for earlier, later in itertools.pairwise(decay))
    assert planned("cosine", 100, 10, warmup_fraction=0.1, min_lr_fraction=0.1)[1].__dict__ == factor.__dict__


@pytest.mark.parametrize(("schedule", "torch_decay"), [("cosine", "CosineAnnealingLR"), ("linear", "LinearLR")])
def test_the_decay_after_the_warm_up_is_torchs_own(schedule, torch_decay):
    total, warmup, floor = 50, 10, 0.2
    factor = planned(schedule, total, 10, warmup_fraction=warmup / total, min_lr_fraction=floor)[1]
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    arguments = {"T_max": total - warmup, "eta_min": floor} if schedule == "cosine" else {}
    if schedule == "linear":
        arguments = {"start_factor": 1.0, "end_factor": floor, "total_iters": total - warmup}
    reference = getattr(torch.optim.lr_scheduler, torch_decay)(optimizer, **arguments)
    for step in range(warmup, total + 1):
        assert factor(step) == pytest.approx(optimizer.param_groups[0]["lr"], abs=1e-12), step
        optimizer.step()
        reference.step()


def test_steps_drop_by_gamma_every_n_epochs_or_at_the_epochs_given():
    every = planned("step", 60, 10, gamma=0.5, every_epochs=2)[1]
    assert [every(step) for step in (0, 19, 20, 39, 40, 59)] == [1, 1, 0.5, 0.5, 0.25, 0.25]
    at = planned("step", 60, 10, at_epochs=[1, 4])[1]
    assert [at(step) for step in (9, 10, 39, 40)] == pytest.approx([1, 0.1, 0.1, 0.01])
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    reference = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[10, 40], gamma=0.1)
    for step in range(60):
        assert at(step) == pytest.approx(optimizer.param_groups[0]["lr"]), step
        optimizer.step()
        reference.step()


@pytest.mark.parametrize("schedule", ["cosine", "linear", "step", "onecycle", "none"])
def test_a_frozen_backbone_is_at_zero_then_follows_the_heads_curve(schedule):
    options = {"every_epochs": 1} if schedule == "step" else {} if schedule == "none" else {"warmup_fraction": 0.2}
    backbone, head = planned(schedule, 40, 10, frozen=10, **options)
    assert [backbone(step) for step in range(10)] == [0.0] * 10
    assert [backbone(step) for step in range(10, 41)] == [head(step) for step in range(10, 41)]


def test_a_warm_up_in_steps_is_that_many_steps_whatever_the_runs_length():
    for total in (30, 100):  # a fraction would move: 0.5 of 30 steps is 15
        factor = planned("cosine", total, 10, warmup_steps=16)[1]
        assert (factor(15), factor(16)) == (pytest.approx(15 / 16), 1.0), total
    epochs = planned("onecycle", 100, 7, warmup_epochs=2)[1]
    assert max(range(100), key=epochs) == 14  # the peak: 2 epochs of 7 optimizer steps


def test_a_schedules_state_is_plain_values_that_load_with_weights_only():
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    scheduler = Steps(optimizer, at_epochs=[2, 3], gamma=0.3)
    scheduler.plan(RunSteps(50, 10, {"": 5}))
    buffer = io.BytesIO()
    torch.save(scheduler.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    restored = Constant(optimizer)  # another plan, overwritten by the state
    restored.load_state_dict(state)
    assert [restored.lr_lambdas[0](step) for step in range(50)] == [scheduler.lr_lambdas[0](step) for step in range(50)]


# -- re-planning on resume -----------------------------------------------------------------------------------------


def resumed(factor: LRFactor, step: int, total_steps: int) -> tuple[LRFactor, list[str]]:
    """``factor`` restored at ``step`` into a run that is to end at ``total_steps``: the re-planned copy and notes."""
    scheduler = PlannedSchedule(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0))
    state = {**scheduler.state_dict(), "lr_lambdas": [copy.deepcopy(vars(factor))], "last_epoch": step}
    scheduler.load_state_dict(state)
    return scheduler.lr_lambdas[0], replan_on_resume(scheduler.optimizer, scheduler, PlannedRun([1.0], total_steps))


def test_a_longer_cosine_run_stretches_what_is_left_of_the_decay():
    planned = LRFactor(20, "cosine", 0.2, min_lr_fraction=0.1)
    longer, notes = resumed(planned, 10, 40)
    assert "what was left of the cosine schedule is stretched over steps 10..39" in notes[0]
    assert longer(10) == planned(10) and longer(25) == pytest.approx(planned(15))  # 10 steps left now take 30
    assert longer(40) == pytest.approx(0.1)  # the floor, at the new end
    shorter, _ = resumed(planned, 10, 15)
    assert shorter(15) == pytest.approx(0.1) and shorter(12) == pytest.approx(planned(14))


def test_a_cosine_schedule_that_had_ended_gives_the_extra_steps_a_new_cycle():
    again, notes = resumed(LRFactor(20, "cosine", 0.2), 20, 40)
    assert "had ended" in notes[0]
    assert again(20) == 0.0 and again(24) == 1.0 and again(40) == pytest.approx(0.0)  # warm-up 4 steps, decay


def test_a_warm_up_in_steps_keeps_its_steps_when_a_resumed_run_changes_its_length():
    planned = LRFactor(20, "cosine", 0.0, min_lr_fraction=0.1, warmup_steps=8)
    longer, notes = resumed(planned, 4, 40)
    assert "the warm-up ends at step 8, as planned, and what is left of the cosine schedule after it" in notes[0]
    assert [longer(step) for step in range(9)] == [planned(step) for step in range(9)]  # 1 at step 8, as planned
    assert longer(24) == pytest.approx(planned(14)) and longer(40) == pytest.approx(0.1)  # the 12 decay steps take 32
    shorter, _ = resumed(planned, 4, 12)
    assert shorter(8) == 1.0 and shorter(12) == pytest.approx(0.1)
    fraction, _ = resumed(LRFactor(20, "cosine", 0.4, min_lr_fraction=0.1), 4, 40)  # the control: 8 steps too ...
    assert fraction(8) == pytest.approx((4 + 4 * 16 / 36) / 8)  # ... but a fraction's is stretched with the rest


def test_a_warm_up_in_steps_restarts_with_its_steps_or_is_refused_when_they_do_not_fit():
    again, notes = resumed(LRFactor(20, "cosine", 0.0, warmup_steps=4), 20, 40)
    assert "had ended" in notes[0] and (again(22), again(24)) == (0.5, 1.0)
    for step, total in ((20, 24), (4, 8)):  # a new cycle, or the run, ends as the warm-up does
        with pytest.raises(UserInputError, match=rf"would end at step {step + 4 if step == 20 else 8}, and the res"):
            resumed(LRFactor(20, "cosine", 0.0, warmup_steps=4 if step == 20 else 8), step, total)


def test_a_longer_step_run_keeps_its_drops_where_they_were():
    drops = planned("step", 20, 10, every_epochs=1, gamma=0.5)[1]
    longer, notes = resumed(LRFactor(**vars(drops)), 15, 40)
    assert "keeps its drops" in notes[0]
    assert [longer(step) for step in range(40)] == [drops(step) for step in range(40)]


def test_a_torch_scheduler_resumed_with_a_new_learning_rate_is_scaled_and_not_rescaled_in_length():
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    for _ in range(2):
        optimizer.step()
        scheduler.step()
    notes = replan_on_resume(optimizer, scheduler, PlannedRun([0.2], 30, 20))
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1) and scheduler.base_lrs == [0.2]  # 0.05, doubled
    assert notes == [
        "0 learning rate 0.2 (was 0.1): StepLR goes on, scaled",
        "the run now ends at step 30 (planned: 20), but model.lr_scheduler StepLR is not rescaled: its arguments are "
        "its own (the project's schedules, such as --model.lr_scheduler Cosine, follow the run's length)",
    ]
    assert replan_on_resume(optimizer, scheduler, PlannedRun([0.2], 30, 30)) == []


def test_reduce_lr_on_plateau_follows_the_tasks_metric_in_its_direction():
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    make = partial(torch.optim.lr_scheduler.ReduceLROnPlateau, mode="min", patience=0)
    config, _ = torch_scheduler_config(make(optimizer), make, ("val/acc", "max"), "momentum 0")
    assert (config["monitor"], config["interval"], config["scheduler"].mode) == ("val/acc", "epoch", "max")
    config["scheduler"].step(0.5)
    config["scheduler"].step(0.4)  # worse for a metric to maximise: reduced
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01)


def test_a_cyclic_scheduler_steps_every_step_and_says_that_it_cycles_adamws_beta1():
    for cycle_momentum in (True, False):
        optimizer = torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=0.01, betas=(0.95, 0.999))
        cyclic = partial(torch.optim.lr_scheduler.CyclicLR, base_lr=0.001, max_lr=0.01, cycle_momentum=cycle_momentum)
        config, note = torch_scheduler_config(cyclic(optimizer), cyclic, ("val/acc", "max"), "beta1 0.95")
        assert optimizer.param_groups[0]["betas"][0] == (0.9 if cycle_momentum else 0.95)  # what torch does
        assert config["interval"] == "step"
        assert note == (
            "model.lr_scheduler CyclicLR cycles AdamW's beta1 between its base_momentum and max_momentum, in place of "
            "the optimizer's (beta1 0.95): torch's cycle_momentum, true by default; "
            "--model.lr_scheduler.cycle_momentum false keeps the optimizer's"
            if cycle_momentum
            else None
        )


# -- refusals --------------------------------------------------------------------------------------------------------


def step_lr(optimizer):
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=2)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"lr_scheduler": step_lr, "finetuning": FineTuning(freeze_backbone_epochs=1)},
            "freeze_backbone_epochs needs one of the project's schedules, which hold the frozen backbone's rate at 0, "
            "not StepLR",
        ),
        ({"lr_scheduler": torch.optim.lr_scheduler.OneCycleLR}, r"model.lr_scheduler: .*max_lr"),
        ({"lr_scheduler": Steps}, r"Steps drops the learning rate every every_epochs epochs .*got every_epochs=None"),
        ({"lr_scheduler": partial(Steps, at_epochs=[3, 2])}, r"such as \[30, 60\]\), one of the two; .*\[3, 2\]"),
        ({"lr_scheduler": partial(Steps, every_epochs=0)}, "got every_epochs=0"),
        ({"lr_scheduler": partial(Steps, at_epochs=[])}, r"at_epochs=\[\]"),
        ({"lr_scheduler": partial(Steps, every_epochs=2, gamma=1.5)}, r"gamma must lie in \(0, 1\), got 1.5"),
        ({"lr_scheduler": partial(Cosine, min_lr_fraction=1.0)}, r"min_lr_fraction must lie in \[0, 1\), got 1.0"),
        ({"lr_scheduler": partial(OneCycle, warmup_fraction=1.5)}, r"warmup_fraction must lie in \(0, 1\), got 1.5"),
    ],
    ids=lambda value: None if isinstance(value, dict) else value[:30],
)
def test_learning_rate_options_that_cannot_work_are_refused_by_name(options, message):
    with pytest.raises(UserInputError, match=message):
        TaskModule(ConvNet(), **options)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"warmup_fraction": 0.1, "warmup_epochs": 1}, r"2 ways \(warmup_fraction 0.1, warmup_epochs 1\)"),
        ({"warmup_epochs": 1, "warmup_steps": 5}, "the warm-up is given 2 ways"),
        ({"warmup_steps": 0}, "model.lr_scheduler.warmup_steps must be a whole number, 1 or more, got 0"),
    ],
)
def test_a_warm_up_given_two_ways_is_refused_by_name(options, message):
    with pytest.raises(UserInputError, match=message):
        TaskModule(ConvNet(), lr_scheduler=partial(Cosine, **options))


def scheduler(name: str, **arguments):
    return partial(getattr(torch.optim.lr_scheduler, name), **arguments)


@pytest.mark.parametrize(
    ("lr_scheduler", "message"),
    [
        (scheduler("CosineAnnealingLR", T_max=0), "model.lr_scheduler.T_max counts CosineAnnealingLR's steps: 1 or mo"),
        (scheduler("StepLR", step_size=0), "model.lr_scheduler.step_size counts StepLR's steps: 1 or more, got 0"),
        (scheduler("ExponentialLR", gamma=-0.5), "ExponentialLR takes a gamma above 0, got -0.5"),
        (scheduler("ExponentialLR", gamma=0.0), "ExponentialLR takes a gamma above 0, got 0.0"),
        (scheduler("MultiStepLR", milestones=[2], gamma=-1.0), "MultiStepLR takes a gamma above 0, got -1.0"),
        (scheduler("ReduceLROnPlateau", factor=0.0), "ReduceLROnPlateau takes a factor above 0, got 0.0"),
        (scheduler("LambdaLR", lr_lambda=lambda step: 1 / (1 - step)), "LambdaLR fails at its first step with these"),
    ],
    ids=["T_max 0", "step_size 0", "gamma < 0", "gamma 0", "milestones gamma", "plateau factor", "first step"],
)
def test_scheduler_arguments_torch_builds_but_that_cannot_work_are_refused_by_name(lr_scheduler, message):
    with pytest.raises(UserInputError, match=message):
        TaskModule(ConvNet(), lr_scheduler=lr_scheduler)
    TaskModule(ConvNet(), lr_scheduler=scheduler("ExponentialLR", gamma=0.5))  # the control
    TaskModule(ConvNet(), lr_scheduler=scheduler("CosineAnnealingLR", T_max=1))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--lr_scheduler=StepLR"], "lr_scheduler is not an option; it is model.lr_scheduler"),
        (
            ["--model.lr_scheduler=StepLR"],
            r"model.lr_scheduler: torch.optim.lr_scheduler.StepLR needs step_size \(--model.lr_scheduler.step_size",
        ),
        (
            ["--model.lr_scheduler=ReduceLROnPlateau"],
            "ReduceLROnPlateau names more than one class; give the full path of one: torch.optim.lr_scheduler.Red",
        ),
    ],
    ids=["top-level", "missing argument", "ambiguous"],
)
def test_the_command_line_refuses_a_scheduler_it_cannot_use_in_one_line(args, message, quick_args, capsys):
    import re

    assert re.search(message, cli_error(["fit", *quick_args, *args], capsys))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model.lr_scheduler=Cosine", "--model.lr_scheduler.warmup_epochs=2"], "model.lr_scheduler Cosine: the "
         "warm-up is 20 optimizer steps, and the whole run is 20: the warm-up must end before the run does"),
        (["--model.lr_scheduler.warmup_steps=12", "--trainer.max_steps=12"], "the warm-up is 12 optimizer steps, and "
         "the whole run is 12"),
        (["--model.lr_scheduler=CosineAnnealingLR", "--model.lr_scheduler.T_max=0"],
         "model.lr_scheduler.T_max counts CosineAnnealingLR's steps: 1 or more, got 0"),
        (["--model.lr_scheduler=ExponentialLR", "--model.lr_scheduler.gamma=-0.5"],
         "ExponentialLR takes a gamma above 0, got -0.5"),
    ],
    ids=["warm-up epochs", "warm-up steps", "T_max 0", "negative gamma"],
)  # fmt: skip
def test_a_warm_up_longer_than_the_run_or_a_scheduler_that_cannot_step_is_one_line_that_writes_nothing(
    args, message, quick_args, run_dir, capsys
):
    assert message in cli_error(["fit", *quick_args, *args], capsys, root=run_dir)


# -- real runs: the logged learning rate, exact resume, rescaling --------------------------------------------------

TINY = ["--model.network.init_args.width=4", "--model.network.init_args.hidden_size=16", "--trainer.max_epochs=2",
        "--trainer.limit_train_batches=6"]  # fmt: skip
LR_MONITOR = ["--trainer.callbacks+=LearningRateMonitor", "--trainer.callbacks.logging_interval=step"]
LR = 0.005
"""configs_exact.yaml's learning rate."""


class StoppedRuns:
    """An uninterrupted 12-step run of ``configs_exact.yaml`` (a tiny network, 2 epochs of 6 steps) and one stopped
    by an exception after step 9 (``last.ckpt`` at step 8, mid-epoch), in this process: a crash whose logs were
    flushed."""

    def __init__(self, root: Path, data_dir: Path, extra: list[str], straight: bool = True) -> None:
        self.args = [f"--config={EXACT_CONFIG}", f"--data.data_dir={data_dir}", *TINY, *extra]
        self.straight_dir, self.stopped_dir = root / "straight", root / "stopped"
        if straight:
            run_in_folder(self.straight_dir, ["fit", "--test_after_fit=false", *self.args, *LR_MONITOR])
        stop = ["--trainer.callbacks+=helpers.InterruptAtStep", "--trainer.callbacks.step=9"]
        with pytest.raises(Interrupted):
            run_in_folder(self.stopped_dir, ["fit", "--test_after_fit=false", *self.args, *stop])

    def resume_copy(self, into: Path, extra: list[str] = ()):
        """Resume a copy of the stopped run to the end; return the CLI."""
        shutil.copytree(self.stopped_dir, into)
        return run_in_folder(into, ["fit", "--test_after_fit=false", *self.args, "--ckpt_path=last", *extra])

    def last_checkpoint(self, folder: Path | None = None) -> Path:
        return (folder or self.straight_dir) / EXACT_RUN / "checkpoints" / "last.ckpt"


def logged_head_lr(run_folder: Path) -> dict[int, float]:
    return dict(directory_scalars(run_folder)["lr-AdamW/head"])


@pytest.fixture(scope="module")
def cosine_runs(tmp_path_factory, fake_data_dir) -> StoppedRuns:
    cosine = ["--model.lr_scheduler=Cosine", "--model.lr_scheduler.warmup_fraction=0.25"]
    cosine.append("--model.lr_scheduler.min_lr_fraction=0.1")
    return StoppedRuns(tmp_path_factory.mktemp("cosine"), fake_data_dir, cosine)


@pytest.fixture(scope="module")
def step_lr_runs(tmp_path_factory, fake_data_dir) -> StoppedRuns:
    torch_step = ["--model.lr_scheduler=StepLR", "--model.lr_scheduler.step_size=1", "--model.lr_scheduler.gamma=0.5"]
    return StoppedRuns(tmp_path_factory.mktemp("step_lr"), fake_data_dir, torch_step)


def test_the_logged_learning_rate_follows_the_cosine_schedule(cosine_runs):
    logged = logged_head_lr(cosine_runs.straight_dir / EXACT_RUN)
    planned = LRFactor(12, "cosine", 0.25, min_lr_fraction=0.1)
    assert sorted(logged) == [1, 3, 5, 7, 9, 11]  # every log_every_n_steps
    assert logged == {step: pytest.approx(LR * planned(step)) for step in logged}
    assert logged[1] == pytest.approx(LR / 3) and logged[3] == pytest.approx(LR)  # the warm-up and its end
    assert LR * 0.1 < logged[11] < LR * 0.15  # near the floor


def test_a_cosine_run_resumed_mid_epoch_equals_the_uninterrupted_one(cosine_runs, tmp_path):
    cosine_runs.resume_copy(tmp_path / "resumed")
    straight = cosine_runs.straight_dir / EXACT_RUN / "checkpoints" / "last.ckpt"
    assert_same_training_state(straight, tmp_path / "resumed" / EXACT_RUN / "checkpoints" / "last.ckpt")


def test_a_cosine_run_resumed_for_longer_stretches_what_is_left_of_its_decay(cosine_runs, tmp_path):
    cli = cosine_runs.resume_copy(
        tmp_path / "longer", ["--trainer.max_epochs=3", "--trainer.callbacks+=helpers.RecordLR"]
    )
    recorded = next(callback for callback in cli.trainer.callbacks if isinstance(callback, RecordLR)).by_step
    head = [recorded[step][1] for step in range(8, 18)]
    planned = LRFactor(12, "cosine", 0.25, min_lr_fraction=0.1)
    assert head[0] == pytest.approx(LR * planned(8))  # goes on from where it was ...
    assert recorded[13][1] == pytest.approx(LR * planned(10))  # ... the 4 steps that were left now take 10
    assert all(later < earlier for earlier, later in itertools.pairwise(head))
    assert LR * 0.1 < head[-1] < LR * 0.11  # down to the floor at the new end


def test_one_epoch_of_warm_up_is_the_optimizer_steps_lightning_counts_in_an_epoch(quick_args):
    cli = run_cli(
        ["fit", *quick_args, "--model.lr_scheduler=Cosine", "--model.lr_scheduler.warmup_epochs=1",
         "--test_after_fit=false", "--trainer.accumulate_grad_batches=3", "--trainer.callbacks+=helpers.RecordLR"]
    )  # fmt: skip
    trainer, scheduler = cli.trainer, cli.trainer.lr_scheduler_configs[0].scheduler
    assert (trainer.num_training_batches, trainer.global_step, trainer.estimated_stepping_batches) == (10, 8, 8)
    assert steps_before_fit(trainer, cli.datamodule) == RunSteps(8, 4)  # what the command line counts before fit
    assert [factor.warmup_steps for factor in scheduler.lr_lambdas] == [4, 4]  # ceil(10 / 3): the last step has 1
    recorded = next(callback for callback in trainer.callbacks if isinstance(callback, RecordLR)).by_step
    lr = scheduler.base_lrs[1]
    assert [recorded[step][1] for step in (3, 4)] == [pytest.approx(lr * 3 / 4), lr]  # the peak as epoch 2 starts


@pytest.fixture(scope="module")
def warmup_steps_run(tmp_path_factory, fake_data_dir) -> StoppedRuns:
    """A 12-step cosine run warming up over its first 10 steps, stopped after step 9 (``last.ckpt`` at step 8)."""
    warmup = ["--model.lr_scheduler=Cosine", "--model.lr_scheduler.warmup_steps=10"]
    warmup.append("--model.lr_scheduler.min_lr_fraction=0.1")
    return StoppedRuns(tmp_path_factory.mktemp("warmup_steps"), fake_data_dir, warmup, straight=False)


def test_a_run_resumed_in_its_warm_up_for_longer_keeps_the_warm_ups_steps(warmup_steps_run, tmp_path):
    cli = warmup_steps_run.resume_copy(
        tmp_path / "longer", ["--trainer.max_epochs=3", "--trainer.callbacks+=helpers.RecordLR"]
    )
    recorded = next(callback for callback in cli.trainer.callbacks if isinstance(callback, RecordLR)).by_step
    head = [recorded[step][1] for step in range(8, 18)]
    assert head[:3] == [pytest.approx(LR * 0.8), pytest.approx(LR * 0.9), LR]  # the peak at step 10, as planned
    planned = LRFactor(12, "cosine", 0.0, min_lr_fraction=0.1, warmup_steps=10)
    assert head[2:] == [pytest.approx(LR * planned(10 + step / 4)) for step in range(8)]  # 2 steps of decay take 8


def test_the_warm_up_in_steps_cannot_change_on_resume(warmup_steps_run, tmp_path, monkeypatch, capsys):
    shutil.copytree(warmup_steps_run.stopped_dir, tmp_path / "resumed")
    monkeypatch.chdir(tmp_path / "resumed")
    args = [*warmup_steps_run.args, "--ckpt_path=last"]
    error = cli_error(["fit", *args, "--model.lr_scheduler.warmup_steps=6"], capsys)
    assert "cannot change on resume: model.lr_scheduler.init_args.warmup_steps 6 (the run has 10)" in error
    as_fraction = [arg for arg in args if not arg.startswith("--model.lr_scheduler.warmup_steps")]
    error = cli_error(["fit", *as_fraction, "--model.lr_scheduler.warmup_fraction=0.25"], capsys)
    assert "model.lr_scheduler.init_args.warmup_fraction 0.25 (the run has None)" in error


def test_the_logged_learning_rate_follows_a_torch_step_lr_stepped_every_epoch(step_lr_runs):
    logged = logged_head_lr(step_lr_runs.straight_dir / EXACT_RUN)
    assert logged == {step: pytest.approx(LR if step < 6 else LR / 2) for step in (1, 3, 5, 7, 9, 11)}


def test_a_torch_step_lr_run_resumed_mid_epoch_equals_the_uninterrupted_one(step_lr_runs, tmp_path):
    step_lr_runs.resume_copy(tmp_path / "resumed")
    straight = step_lr_runs.straight_dir / EXACT_RUN / "checkpoints" / "last.ckpt"
    assert_same_training_state(straight, tmp_path / "resumed" / EXACT_RUN / "checkpoints" / "last.ckpt")


def test_a_torch_scheduler_resumed_for_longer_says_it_is_not_rescaled(step_lr_runs, tmp_path, monkeypatch):
    import project.training.task_module

    said: list[str] = []
    monkeypatch.setattr(project.training.task_module, "rank_zero_info", said.append)
    cli = step_lr_runs.resume_copy(tmp_path / "longer", ["--trainer.max_epochs=3"])
    assert cli.trainer.global_step == 18
    notes = [line for line in said if line.startswith("Resumed with new settings")]
    assert (
        len(notes) == 1 and "ends at step 18 (planned: 12), but model.lr_scheduler StepLR is not rescaled" in notes[0]
    )


def test_a_step_schedule_resumed_mid_epoch_trains_as_torchs_step_lr_does_uninterrupted(step_lr_runs, tmp_path):
    step = ["--model.lr_scheduler=Steps", "--model.lr_scheduler.every_epochs=1", "--model.lr_scheduler.gamma=0.5"]
    runs = StoppedRuns(tmp_path, step_lr_runs.args[1].removeprefix("--data.data_dir="), step, straight=False)
    runs.resume_copy(tmp_path / "resumed")
    expected = torch.load(step_lr_runs.last_checkpoint(), weights_only=True)
    actual = torch.load(runs.last_checkpoint(tmp_path / "resumed"), weights_only=True)
    assert actual["global_step"] == expected["global_step"] == 12
    for name, tensor in expected["state_dict"].items():
        assert torch.equal(actual["state_dict"][name], tensor), f"weights differ: {name}"
    assert actual["optimizer_states"][0]["param_groups"] == expected["optimizer_states"][0]["param_groups"]


@pytest.mark.slow
def test_a_torch_one_cycle_stepped_every_step_resumes_exactly(tmp_path, fake_data_dir):
    one_cycle = ["--model.lr_scheduler=OneCycleLR", "--model.lr_scheduler.max_lr=0.005"]
    one_cycle.append("--model.lr_scheduler.total_steps=12")
    runs = StoppedRuns(tmp_path, fake_data_dir, one_cycle)
    runs.resume_copy(tmp_path / "resumed")
    assert_same_training_state(runs.last_checkpoint(), runs.last_checkpoint(tmp_path / "resumed"))
    logged = logged_head_lr(runs.straight_dir / EXACT_RUN)
    assert logged[3] > logged[1] and logged[11] < logged[5]  # stepped every optimizer step: up, then down


def test_a_checkpoint_rebuilds_its_torch_scheduler_only_from_the_allow_list(step_lr_runs):
    from project.training.checkpoints import read_checkpoint

    checkpoint = read_checkpoint(step_lr_runs.last_checkpoint())
    model = TaskModule.from_checkpoint(checkpoint, "last.ckpt")
    assert model.make_scheduler.func is torch.optim.lr_scheduler.StepLR
    assert model.make_scheduler.keywords == {"step_size": 1, "gamma": 0.5, "last_epoch": -1}
    checkpoint["hyper_parameters"]["lr_scheduler"] = {"class_path": "os.system", "init_args": {}}
    with pytest.raises(UserInputError, match=r"names the lr_scheduler os\.system, which is not allowed here"):
        TaskModule.from_checkpoint(checkpoint, "last.ckpt")


def test_a_torch_scheduler_cannot_be_left_out_when_its_run_resumes(step_lr_runs, tmp_path, monkeypatch, capsys):
    shutil.copytree(step_lr_runs.stopped_dir, tmp_path / "resumed")
    monkeypatch.chdir(tmp_path / "resumed")
    without = [arg for arg in step_lr_runs.args if not arg.startswith("--model.lr_scheduler")]
    error = cli_error(["fit", *without, "--ckpt_path=last"], capsys)
    expected = "cannot change on resume: model.lr_scheduler.class_path 'project.training.schedules.OneCycle' (the run"
    assert expected in error
