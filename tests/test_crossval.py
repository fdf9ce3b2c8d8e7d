"""K-fold cross-validation: the folds of ``data.split.folds`` (an exact, stratified, seeded partition of the training
pool; fold I validates), their checks, and ``python -m project crossval`` on generated data: K runs and a summary of
their metrics, a rerun that skips finished folds and resumes an interrupted one, and its refusals."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from project.__main__ import main
from project.data import MNISTDataModule, Split
from project.data.splits import fold_split
from project.errors import UserInputError
from project.inference.evaluation import data_module_from_checkpoint
from project.trusted import trust

trust(__name__)  # its callback is named on a command line (--trainer.callbacks+=...), as a user's own module's

TESTS = Path(__file__).resolve().parent
TINY = [
    "--config=debug",
    "--model.network.init_args.width=4",
    "--model.network.init_args.hidden_size=16",
    "--trainer.limit_train_batches=4",
    "--trainer.logger.init_args.log_graph=false",
]


def unbalanced_labels(count: int = 103, seed: int = 0) -> torch.Tensor:
    """Labels of 4 classes in unequal shares (about 50%, 30%, 15%, 5%)."""
    draws = torch.rand(count, generator=torch.Generator().manual_seed(seed))
    return torch.bucketize(draws, torch.tensor([0.5, 0.8, 0.95]))


@pytest.mark.parametrize("folds", [2, 3, 5])
def test_the_folds_partition_the_pool_exactly_and_keep_the_class_proportions(folds):
    labels = unbalanced_labels()
    splits = [fold_split(labels, len(labels), folds, fold, seed=7) for fold in range(folds)]
    validation = torch.cat([val for _, val in splits])
    assert sorted(validation.tolist()) == list(range(len(labels)))  # disjoint, and covering the pool
    for train, val in splits:
        assert sorted(torch.cat([train, val]).tolist()) == list(range(len(labels)))  # the others train
    sizes = [len(val) for _, val in splits]
    assert max(sizes) - min(sizes) <= 1
    for label in labels.unique():
        per_fold = [int((labels[val] == label).sum()) for _, val in splits]
        assert max(per_fold) - min(per_fold) <= 1, (int(label), per_fold)


def test_a_plain_shuffle_would_not_keep_the_class_proportions():  # the negative control of stratification
    labels = unbalanced_labels()
    plain = [fold_split(None, len(labels), 5, fold, seed=7)[1] for fold in range(5)]
    spreads = [
        max(per_fold) - min(per_fold)
        for label in labels.unique()
        for per_fold in [[int((labels[val] == label).sum()) for val in plain]]
    ]
    assert max(spreads) > 1
    assert sorted(torch.cat(plain).tolist()) == list(range(len(labels)))  # still a partition


def test_the_same_seed_makes_the_same_folds_and_another_seed_other_folds():
    labels = unbalanced_labels()
    first = fold_split(labels, len(labels), 3, 1, seed=7)[1].tolist()
    assert fold_split(labels, len(labels), 3, 1, seed=7)[1].tolist() == first
    assert fold_split(labels, len(labels), 3, 1, seed=8)[1].tolist() != first


def val_positions(data: MNISTDataModule) -> list[int]:
    data.setup("fit")
    return list(data.val_set.indices)


def test_fold_i_of_a_data_module_is_its_validation_set_and_the_test_split_is_unchanged(fake_data_dir):
    folds = [MNISTDataModule(data_dir=str(fake_data_dir), split=Split(folds=3, fold=i)) for i in range(3)]
    labels = folds[0].split_labels(folds[0].load_split(train=True))
    for i, data in enumerate(folds):
        assert val_positions(data) == fold_split(labels, len(labels), 3, i, seed=42)[1].tolist()
        assert sorted(data.train_set.indices + data.val_set.indices) == list(range(600))
    assert len({tuple(data.val_set.indices) for data in folds}) == 3
    plain = MNISTDataModule(data_dir=str(fake_data_dir), split=Split(val_size=100))
    plain.setup("fit")
    assert len(folds[1].test_set) == len(plain.test_set) == 200


def test_a_few_shot_subset_is_taken_from_the_training_folds_and_the_fold_validates_whole(fake_data_dir):
    data = MNISTDataModule(data_dir=str(fake_data_dir), split=Split(folds=3, fold=2, samples_per_class=5))
    whole = MNISTDataModule(data_dir=str(fake_data_dir), split=Split(folds=3, fold=2))
    assert val_positions(data) == val_positions(whole)
    assert len(data.train_set) == 50 and set(data.train_set.indices) <= set(whole.train_set.indices)


@pytest.mark.parametrize(
    ("split", "expected"),
    [
        ({"folds": 1, "fold": 0}, "data.split.folds must be a whole number of 2 or more, got 1"),
        ({"folds": 3, "fold": 3}, "data.split.fold must be a whole number from 0 to 2"),
        ({"folds": 3, "fold": -1}, "data.split.fold must be a whole number from 0 to 2"),
        ({"folds": 3}, "data.split.folds=3 needs data.split.fold"),
        ({"fold": 1}, "data.split.fold=1 needs data.split.folds"),
    ],
)
def test_fold_options_out_of_range_are_refused_by_the_split_in_one_line(split, expected):
    with pytest.raises(UserInputError, match="^" + expected) as refused:
        Split(**split)
    assert "\n" not in str(refused.value)
    Split(folds=3, fold=2)  # the control: in range


def refusal(args: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as stopped:
        main(["crossval", *args])
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--data.split.fold", "1"], "crossval: data.split.fold is set for each fold by crossval"),
        (["--data.split.folds=4"], "crossval: data.split.folds is set for each fold by crossval"),
        (["--data.split.val_size", "100"], "crossval: data.split.val_size and --folds exclude each other"),
        (["--folds", "1"], "folds: expected 2 or more, got 1"),
        (["--workers", "0"], "workers: expected 1 or more, got 0"),
        (["--name", "a/b"], "name: 'a/b' is not a folder name"),
        (["--data.split.split_seed=x"], "crossval: data.split.split_seed: expected an integer, got 'x'"),
    ],
)
def test_a_crossval_refused_says_why_in_one_line_and_makes_no_folder(args, expected, fake_data_dir, run_dir, capsys):
    assert expected in refusal([*TINY, f"--data.data_dir={fake_data_dir}", *args], capsys)
    assert not (run_dir / "logs").exists()


def read_folds(name: str) -> list[dict[str, str]]:
    with open(Path("logs/crossval") / name / "folds.csv") as file:
        return list(csv.DictReader(file))


def best_score(run_folder: Path) -> float:
    """The best ``val/acc`` the run's checkpoint callback kept (its own record, not the crossval's)."""
    last = torch.load(run_folder / "checkpoints" / "last.ckpt", weights_only=True)
    state = next(value for value in last["callbacks"].values() if "best_model_score" in value)
    return float(state["best_model_score"])


@pytest.mark.slow
@pytest.mark.parametrize(("folds", "workers"), [(2, 1), (3, 2)])
def test_crossval_trains_each_fold_as_a_run_and_summarises_their_metrics(folds, workers, fake_data_dir, run_dir):
    main(["crossval", "--folds", str(folds), "--workers", str(workers), *TINY, f"--data.data_dir={fake_data_dir}"])
    rows = read_folds("debug")  # named after the first preset
    assert [row["fold"] for row in rows] == [str(i) for i in range(folds)]
    assert [row["state"] for row in rows] == ["COMPLETE"] * folds
    runs = [Path("logs/crossval/debug") / row["run_folder"] for row in rows]
    assert len(set(runs)) == folds and all((run / "config.yaml").is_file() for run in runs)
    for fold, (row, run) in enumerate(zip(rows, runs, strict=True)):
        assert float(row["val/acc"]) == pytest.approx(best_score(run))
        assert "test/acc" in row and row["test/acc"] != ""
        recorded = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
        rebuilt = data_module_from_checkpoint(recorded)  # as evaluate and a resume rebuild it: the same fold
        assert (rebuilt.split.folds, rebuilt.split.fold) == (folds, fold)
    summary = (Path("logs/crossval/debug") / "summary.md").read_text()
    for metric in ("val/acc", "val/loss", "test/acc"):
        mean = sum(float(row[metric]) for row in rows) / folds
        line = next(line for line in summary.splitlines() if line.startswith(f"| {metric} |"))
        assert float(line.split("|")[2]) == pytest.approx(mean, abs=5e-5)
    assert f"{folds} of {folds} folds complete" in summary


class StopOnce(L.Callback):
    """SIGTERM this process when epoch 1 of fold 1 starts (its epoch-0 ``last.ckpt`` written), the first time only: a
    preempted job, whose rerun resumes the fold."""

    def __init__(self, marker: str) -> None:
        self.marker = Path(marker)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        fold = trainer.datamodule.split.fold
        if fold == 1 and trainer.current_epoch == 1 and not self.marker.exists():
            self.marker.touch()
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.slow
def test_a_rerun_skips_finished_folds_and_resumes_an_interrupted_one(fake_data_dir, run_dir):
    stop = ["--trust=test_crossval", "--trainer.callbacks+=test_crossval.StopOnce"]
    stop.append(f"--trainer.callbacks.marker={run_dir / 'stopped'}")
    command = [sys.executable, "-m", "project", "crossval", "--folds", "2", "--name", "cv"]
    command += [*TINY, f"--data.data_dir={fake_data_dir}", *stop]
    path = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 128 + signal.SIGTERM, first.stderr[-3000:]
    assert [row["state"] for row in read_folds("cv")] == ["COMPLETE", "WAITING"]  # queued again, to resume
    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "1 of 2 folds finished so far" in second.stdout
    assert "resuming interrupted trial 1 from" in second.stdout
    assert "(data.split.fold=0)" not in second.stdout  # fold 0 not trained again
    trials = Path("logs/crossval/cv/trials")
    assert sorted(path.name for path in trials.iterdir()) == ["trial_0000", "trial_0001"]
    assert (trials / "trial_0001" / "version_0" / "config-resume1.yaml").is_file()  # resumed into its folder
    assert not (trials / "trial_0000" / "version_0" / "config-resume1.yaml").exists()
    assert [row["state"] for row in read_folds("cv")] == ["COMPLETE", "COMPLETE"]
    third = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert third.returncode == 0 and "2 of 2 folds finished so far" in third.stdout
    assert "(data.split.fold=" not in third.stdout  # nothing trained
    other = subprocess.run([*command, "--seed_everything=1"], env=env, capture_output=True, text=True, timeout=600)
    assert other.returncode == 2 and "its folds are trained with other fit options" in other.stderr


@pytest.mark.parametrize("queued_only", [True, False])  # False: the negative control, a sweep's worker
def test_a_worker_with_no_fold_queued_trains_no_fold_of_its_own(queued_only, fake_data_dir, run_dir, monkeypatch):
    from project.sweeps import study as worker_loop
    from project.sweeps.crossval import _prepare
    from project.sweeps.storage import storage_for

    trained = []

    def run_trial(sweep, study, trial):  # a fold "trained" at once
        trained.append(trial.number)
        study.tell(trial, 0.5)
        return 1

    monkeypatch.setattr(worker_loop, "run_trial", run_trial)
    sweep, _ = _prepare(["--folds", "2", "--config=debug", f"--data.data_dir={fake_data_dir}"])
    sweep.queued_only = queued_only
    sweep.folder.mkdir(parents=True)
    worker_loop.open_study(sweep, storage_for(sweep))  # a study with no fold queued: all done, or being done
    worker_loop.run_worker(sweep)
    assert len(trained) == (0 if queued_only else 2)  # a sweep's worker samples trials of its own
