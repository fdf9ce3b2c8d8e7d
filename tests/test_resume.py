"""Resuming with --ckpt_path last: counters continue, no step is repeated or skipped, same log folder."""

from __future__ import annotations

import itertools

import pytest
import torch
from helpers import Interrupted, cli_error, scalar_steps
from test_reliability import assert_same_training_state

from project.cli import main, run_cli

INTERRUPT_AFTER_EPOCH_1 = ["--trainer.callbacks+=helpers.InterruptAtEpoch", "--trainer.callbacks.epoch=1"]


@pytest.fixture
def interrupted_run(quick_args, run_dir):
    """A 2-epoch run that crashes when epoch 2 starts, after epoch 1's checkpoints were written."""
    with pytest.raises(Interrupted):
        run_cli(["fit", *quick_args, *INTERRUPT_AFTER_EPOCH_1])
    return run_dir / "logs" / "mnist" / "version_0"


def test_interrupted_run_leaves_a_last_checkpoint_after_epoch_1(interrupted_run):
    checkpoint = torch.load(interrupted_run / "checkpoints" / "last.ckpt", weights_only=True)
    assert (checkpoint["epoch"], checkpoint["global_step"]) == (0, 10)


def test_resume_continues_epoch_and_global_step(interrupted_run, quick_args):
    cli = run_cli(["fit", *quick_args, "--ckpt_path=last", "--test_after_fit=false"])
    assert (cli.trainer.current_epoch, cli.trainer.global_step) == (2, 20)
    checkpoint = torch.load(interrupted_run / "checkpoints" / "last.ckpt", weights_only=True)
    assert (checkpoint["epoch"], checkpoint["global_step"]) == (1, 20)  # written at the end of epoch 1


def test_resume_writes_into_the_same_log_version_and_keeps_every_config(interrupted_run, quick_args, run_dir):
    run_cli(["fit", *quick_args, "--ckpt_path=last", "--test_after_fit=false"])
    assert sorted(path.name for path in (run_dir / "logs" / "mnist").iterdir()) == ["version_0"]
    assert (interrupted_run / "config.yaml").is_file() and (interrupted_run / "config-resume1.yaml").is_file()


def test_resumed_run_logs_the_same_steps_as_an_uninterrupted_one(interrupted_run, quick_args, run_dir):
    run_cli(["fit", *quick_args, "--ckpt_path=last", "--test_after_fit=false"])
    resumed = scalar_steps(interrupted_run)

    run_cli(["fit", *quick_args, "--test_after_fit=false", "--trainer.logger.init_args.name=straight"])
    uninterrupted = scalar_steps(run_dir / "logs" / "straight" / "version_0")

    assert resumed.keys() == uninterrupted.keys()
    for (
        tag,
        steps,
    ) in resumed.items():  # Lightning writes "epoch" with every batch of scalars: compare as multisets
        assert sorted(steps) == sorted(uninterrupted[tag]), f"{tag}: {steps} != {uninterrupted[tag]}"
    for tag in ("train/loss_step", "train/loss_epoch", "val/acc", "lr-AdamW/head"):
        assert len(resumed[tag]) == len(set(resumed[tag])), f"{tag}: a step was logged twice: {resumed[tag]}"
    assert resumed["train/loss_step"] == [
        1,
        3,
        5,
        7,
        9,
        11,
        13,
        15,
        17,
        19,
    ]  # every 2nd of the 20 steps, in order


def test_resume_with_no_run_to_resume_is_a_clear_error(quick_args, run_dir, capsys):
    with pytest.raises(SystemExit) as caught:
        main(["fit", *quick_args, "--ckpt_path=last"])
    assert caught.value.code == 2
    error = capsys.readouterr().err
    assert "error: --ckpt_path last: no last.ckpt under logs/mnist/version_*/checkpoints/" in error


def test_resume_from_a_missing_file_is_a_clear_error(quick_args, run_dir, capsys):
    with pytest.raises(SystemExit):
        main(["fit", *quick_args, "--ckpt_path=nowhere.ckpt"])
    assert "error: --ckpt_path nowhere.ckpt: no such checkpoint file" in capsys.readouterr().err


def test_resume_from_an_explicit_path_continues_that_run(interrupted_run, quick_args, run_dir):
    run_cli(["fit", *quick_args, "--test_after_fit=false"])  # a second, newer run: version_1
    cli = run_cli(
        [
            "fit",
            *quick_args,
            f"--ckpt_path={interrupted_run / 'checkpoints' / 'last.ckpt'}",
            "--test_after_fit=false",
        ]
    )
    assert cli.trainer.logger.version == "version_0"
    assert cli.trainer.global_step == 20


# -- what a resumed run may change --------------------------------------------------------------------------------


def lr_recorder(cli) -> dict[int, list[float]]:
    from helpers import RecordLR

    return next(callback for callback in cli.trainer.callbacks if isinstance(callback, RecordLR)).by_step


RECORD_LR = ["--trainer.callbacks+=helpers.RecordLR"]


def test_a_learning_rate_given_on_resume_takes_effect(interrupted_run, quick_args):
    from project.training.lr_factor import LRFactor

    cli = run_cli(
        ["fit", *quick_args, "--ckpt_path=last", "--model.optimizer.lr=0.0003", *RECORD_LR, "--test_after_fit=false"]
    )
    expected = 0.0003 * LRFactor(20, "onecycle", 0.2)(10)  # the plan of the whole run, at the resumed step
    assert lr_recorder(cli)[10] == [pytest.approx(expected)] * 2
    assert cli.trainer.lr_scheduler_configs[0].scheduler.base_lrs == [0.0003, 0.0003]


def test_after_a_divergence_a_lower_learning_rate_on_resume_trains_to_the_end(interrupted_run, quick_args, capsys):
    with pytest.raises(SystemExit) as caught:
        main(["fit", *quick_args, "--ckpt_path=last", "--model.optimizer.lr=1e12", "--test_after_fit=false"])
    assert caught.value.code == 1
    error = capsys.readouterr().err
    assert "the training loss is" in error and "last.ckpt" in error
    checkpoint = torch.load(interrupted_run / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 10  # the state before the divergence
    cli = run_cli(["fit", *quick_args, "--ckpt_path=last", "--model.optimizer.lr=0.003", "--test_after_fit=false"])
    assert cli.trainer.global_step == 20
    assert all(torch.isfinite(parameter).all() for parameter in cli.model.parameters())


@pytest.mark.parametrize(
    "option",
    [
        "--data.batch_size=25",
        "--data.split.samples_per_class=5",
        "--model.network.init_args.hidden_size=64",
        "--model.optimizer=SGD",
        "--seed_everything=1",
        "--trainer.accumulate_grad_batches=2",
    ],
)
def test_options_that_cannot_change_on_resume_are_refused_by_name(option, interrupted_run, quick_args, capsys):
    from helpers import cli_error

    error = cli_error(["fit", *quick_args, "--ckpt_path=last", option], capsys)
    name = option.removeprefix("--").split("=")[0]
    assert name.split(".")[-1] in error and "cannot change on resume" in error


@pytest.mark.parametrize("option", ["--data.augment.shift=1", "--data.labels.positive_classes=[5,6]"])
def test_an_option_of_a_piece_of_the_data_cannot_change_on_resume(option, interrupted_run, quick_args, capsys):
    error = cli_error(["fit", *quick_args, "--ckpt_path=last", option], capsys)
    name, _, value = option.removeprefix("--").partition("=")
    assert f"cannot change on resume: {name} {value.replace(',', ', ')} (the run has" in error


def test_how_the_data_is_loaded_may_change_on_resume(interrupted_run, quick_args):
    changed = ["--data.loading.eval_batch_size=40", "--data.loading.num_workers=1"]
    cli = run_cli(["fit", *quick_args, "--ckpt_path=last", *changed, "--test_after_fit=false"])
    assert cli.trainer.global_step == 20 and cli.datamodule.loading.eval_batch_size == 40


OPTIONS_BEFORE_THE_PIECES = {"val_size": 100, "split_seed": 42, "eval_batch_size": 100, "num_workers": 0,
                             "augment_shift": 0, "in_memory": None, "positive_classes": None}  # fmt: skip
"""Data options as a checkpoint written before they were grouped into pieces (``data.split`` ...) records them."""


def test_a_checkpoint_from_before_the_data_options_were_grouped_is_refused_in_one_line(
    interrupted_run, quick_args, capsys
):
    from project.errors import UserInputError
    from project.inference.evaluation import data_module_from_checkpoint

    last = interrupted_run / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    recorded = checkpoint["datamodule_hyper_parameters"]
    old = {key: recorded[key] for key in ("_class_path", "dataset", "download", "image_size", "data_dir", "batch_size")}
    checkpoint["datamodule_hyper_parameters"] = {**old, **OPTIONS_BEFORE_THE_PIECES}
    del checkpoint["MNISTDataModule"]["position"]  # the callback kept it then
    torch.save(checkpoint, last)
    error = cli_error(["fit", *quick_args, "--ckpt_path=last"], capsys)
    assert (
        "cannot change on resume: the run's data options augment_shift, eval_batch_size, in_memory, num_workers, "
        "positive_classes, split_seed, val_size, which this version of MNISTDataModule does not take" in error
    )
    with pytest.raises(UserInputError, match=r"^the checkpoint's data module arguments do not fit .*MNISTDataModule"):
        data_module_from_checkpoint(checkpoint)


@pytest.mark.slow
def test_training_longer_than_planned_gives_the_extra_epochs_a_new_cycle(quick_args, run_dir):
    run_cli(["fit", *quick_args, "--test_after_fit=false"])  # 2 epochs, 20 steps: the one-cycle schedule ends
    cli = run_cli(
        ["fit", *quick_args, "--ckpt_path=last", "--trainer.max_epochs=4", *RECORD_LR, "--test_after_fit=false"]
    )
    head = [lrs[1] for step, lrs in sorted(lr_recorder(cli).items())]
    assert cli.trainer.global_step == 40 and len(head) == 20
    assert max(head) == pytest.approx(0.003, rel=0.05)  # warms up to the peak again ...
    assert head[0] < 0.0005 and head[-1] < 0.0001  # ... from a low start, and anneals to about zero


@pytest.mark.slow
def test_training_longer_before_the_schedule_ended_stretches_what_is_left(interrupted_run, quick_args):
    from project.training.lr_factor import LRFactor

    cli = run_cli(
        ["fit", *quick_args, "--ckpt_path=last", "--trainer.max_epochs=4", *RECORD_LR, "--test_after_fit=false"]
    )
    head = [lrs[1] for step, lrs in sorted(lr_recorder(cli).items())]
    assert len(head) == 30
    planned = LRFactor(20, "onecycle", 0.2)
    assert head[0] == pytest.approx(0.003 * planned(10))  # continues where it was ...
    assert head[15] == pytest.approx(0.003 * planned(15))  # ... the 10 steps that were left now take 30
    assert all(later <= earlier for earlier, later in itertools.pairwise(head))  # still annealing
    assert head[-1] < 0.0001


def test_stale_temporary_files_of_a_killed_save_are_removed_when_the_run_resumes(interrupted_run, quick_args):
    stale = interrupted_run / "checkpoints" / ".last.ckpt.k1ll3d.tmp"
    stale.write_bytes(b"half a checkpoint")
    run_cli(["fit", *quick_args, "--ckpt_path=last", "--test_after_fit=false"])
    assert not stale.exists()


def test_a_non_finite_optimizer_state_is_never_saved_and_the_last_finite_state_resumes(quick_args, run_dir, capsys):
    poison = ["--trainer.callbacks+=helpers.PoisonOptimizerAtStep", "--trainer.callbacks.step=13"]
    with pytest.raises(SystemExit) as caught:
        main(["fit", *quick_args, *poison, "--test_after_fit=false"])
    assert caught.value.code == 1
    assert "optimizer state" in capsys.readouterr().err
    last = run_dir / "logs" / "mnist" / "version_0" / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["global_step"] == 10
    for state in checkpoint["optimizer_states"][0]["state"].values():
        assert all(torch.isfinite(value).all() for value in state.values() if isinstance(value, torch.Tensor))
    cli = run_cli(["fit", *quick_args, "--ckpt_path=last", "--test_after_fit=false"])
    assert cli.trainer.global_step == 20


# -- TensorBoard after a crash: one curve per tag ----------------------------------------------------------------


def assert_strictly_increasing_steps(run_folder) -> None:
    from helpers import directory_image_steps, directory_scalars

    scalars = {tag: [step for step, _ in points] for tag, points in directory_scalars(run_folder).items()}
    for tag, steps in {**scalars, **directory_image_steps(run_folder)}.items():
        if tag == "epoch":  # Lightning writes "epoch" beside every batch of scalars, several per step
            continue
        assert steps == sorted(set(steps)), f"{tag}: {steps}"


@pytest.mark.slow
def test_a_crash_after_the_checkpoint_leaves_no_repeated_steps_in_tensorboard(quick_args, run_dir):
    from helpers import directory_scalars

    crash = ["--trainer.callbacks+=helpers.InterruptAtStep", "--trainer.callbacks.step=17"]
    with pytest.raises(Interrupted):
        run_cli(["fit", *quick_args, *crash, "--test_after_fit=false"])  # last.ckpt at step 10, logs up to 17
    run_cli(["fit", *quick_args, "--ckpt_path=last", "--test_after_fit=false"])
    run_folder = run_dir / "logs" / "mnist" / "version_0"
    assert_strictly_increasing_steps(run_folder)
    run_cli(["fit", *quick_args, "--test_after_fit=false", "--trainer.logger.init_args.name=straight"])
    straight = directory_scalars(run_dir / "logs" / "straight" / "version_0")
    resumed = directory_scalars(run_folder)
    for tag in ("train/loss_step", "lr-AdamW/head", "val/acc"):
        assert [step for step, _ in resumed[tag]] == [step for step, _ in straight[tag]], tag


@pytest.mark.slow
def test_the_fallback_from_a_truncated_last_checkpoint_rewinds_tensorboard_too(fake_data_dir, run_dir):
    from test_reliability import EXACT_CONFIG

    args = ["fit", f"--config={EXACT_CONFIG}", f"--data.data_dir={fake_data_dir}", "--test_after_fit=false",
            "--trainer.callbacks+=project.training.checkpoints.BestCheckpoint"]  # fmt: skip
    with pytest.raises(Interrupted):
        run_cli([*args, "--trainer.callbacks+=helpers.InterruptAtStep", "--trainer.callbacks.step=18"])
    folder = run_dir / "logs" / "configs_exact" / "version_0"
    last = folder / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 16
    last.write_bytes(last.read_bytes()[:1000])  # what a crash mid-write leaves without atomic saves
    with pytest.warns(UserWarning, match="newest readable checkpoint instead"):
        cli = run_cli([*args, "--ckpt_path=last"])
    assert cli.trainer.global_step == 30
    assert_strictly_increasing_steps(folder)


@pytest.mark.slow
def test_resuming_a_run_that_reached_its_epochs_with_only_more_steps_names_max_epochs(quick_args, run_dir, capsys):
    """Lightning would train nothing, say ``max_epochs=2 reached``, test again and write config-resume1.yaml."""
    run_cli(["fit", *quick_args, "--trainer.max_steps=20", "--test_after_fit=false"])  # 2 epochs of 10 steps
    error = cli_error(["fit", *quick_args, "--trainer.max_steps=30", "--ckpt_path=last"], capsys)
    assert "--trainer.max_epochs=2 is reached already" in error and "raise --trainer.max_epochs too" in error
    more_epochs = ["--trainer.max_epochs=3", "--ckpt_path=last"]
    error = cli_error(["fit", *quick_args, *more_epochs, "--trainer.max_steps=20"], capsys)
    assert "--trainer.max_steps=20 is reached already" in error
    assert not (run_dir / "logs" / "mnist" / "version_0" / "config-resume1.yaml").exists()
    resumed = run_cli(["fit", *quick_args, "--trainer.max_epochs=3", "--trainer.max_steps=30", "--ckpt_path=last"])
    assert resumed.trainer.global_step == 30  # the negative control: raised, it trains on


@pytest.mark.slow
def test_a_run_by_max_steps_resumed_at_an_epoch_end_trains_what_an_uninterrupted_run_does(quick_args, run_dir):
    """With max_steps set, Lightning takes a checkpoint of a finished epoch for a restart inside it and runs that
    epoch again empty (Lightning #19617): one epoch fewer, and the next epoch's data order."""
    limits = ["--trainer.max_epochs=4", "--trainer.max_steps=40", "--test_after_fit=false"]
    interrupt = ["--trainer.callbacks+=helpers.InterruptAtEpoch", "--trainer.callbacks.epoch=2"]
    with pytest.raises(Interrupted):  # when epoch 3 starts: last.ckpt was written at the end of epoch 2, step 20
        run_cli(["fit", *quick_args, *limits, *interrupt])
    resumed = run_cli(["fit", *quick_args, *limits, "--ckpt_path=last"])
    straight = run_cli(["fit", *quick_args, *limits, "--trainer.logger.init_args.name=straight"])
    assert [(run.trainer.current_epoch, run.trainer.global_step) for run in (resumed, straight)] == [(4, 40)] * 2
    logs = run_dir / "logs"
    assert_same_training_state(
        logs / "straight" / "version_0" / "checkpoints" / "last.ckpt",
        logs / "mnist" / "version_0" / "checkpoints" / "last.ckpt",
    )


def test_sigterm_before_the_first_step_says_that_no_checkpoint_was_written(quick_args, run_dir, capsys):
    # after the first batch, which with accumulation over 2 batches takes no optimizer step: nothing to save yet
    signal_early = ["--trainer.accumulate_grad_batches=2", "--trainer.callbacks+=helpers.SignalAtStep"]
    signal_early.append("--trainer.callbacks.step=0")
    with pytest.raises(SystemExit) as caught:
        main(["fit", *quick_args, *signal_early])
    out = capsys.readouterr().out
    assert caught.value.code == 143
    assert "Stopped by SIGTERM at step 0: no checkpoint of this run was written" in out
    assert "--ckpt_path last" not in out and not list(run_dir.rglob("last.ckpt"))


def test_a_run_without_validation_says_why_it_tests_the_weights_in_memory(quick_args, run_dir, capsys):
    run_cli(["fit", *quick_args, "--trainer.max_epochs=1", "--trainer.limit_val_batches=0"])
    out = capsys.readouterr().out
    assert "No best checkpoint (no validation ran, so no best checkpoint was chosen)" in out
    assert "fast_dev_run" not in out and list(run_dir.rglob("last.ckpt"))
