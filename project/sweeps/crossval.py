"""``python -m project crossval [--folds K] [--workers N] [--name NAME] [fit options...]``: K-fold cross-validation,
run as a sweep whose trials are the folds (docs/crossval.md).

The folds are the trials of an Optuna study in ``logs/crossval/NAME/study.db`` that searches nothing: its one
option, ``data.split.fold``, takes each of 0 .. K-1 once (each queued when the study is made), beside the fixed
``data.split.folds`` K (:class:`project.data.Split`). So each fold is a normal ``fit`` run in
``logs/crossval/NAME/trials/``, run by the sweep's workers (:func:`project.sweeps.study.run_worker`: one after the
other, or ``--workers N`` at once on the one study), resumed from its ``last.ckpt`` when it was interrupted, never
pruned, and tested on the test split after fit (its best checkpoint). Each fold's trial keeps the metrics of its run
(:attr:`project.sweeps.trial.TrialCallback.metrics`); the results are their mean and spread over the complete folds:
``folds.csv`` (a row per fold), ``summary.md`` and the same table on the console, each rewritten whole after every
fold.

Running the command again continues the study: finished folds are skipped, an interrupted one is resumed, one that
failed is queued again. Its fit options must be those the study started with (recorded in it): folds trained with
other options would not make one estimate.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Any

from project.cli.commands import crossval_arguments
from project.cli.refusals import exit_on_refusal
from project.errors import UserInputError
from project.files.atomic import written_whole
from project.sweeps.command import (
    WORKER_ENV,
    check_fit_args,
    default_objective,
    run_workers,
    threads_for,
    user_option_keys,
)
from project.sweeps.results import aligned, duration, write_rows
from project.sweeps.spec import Param, SweepSpec
from project.sweeps.storage import Sweep, open_study, quiet_optuna, storage_for
from project.sweeps.study import counts, finished, run_worker
from project.training.progress import say

_FOLD = "data.split.fold"
"""The option each fold's run is given: which fold validates."""
_FOLDS = "data.split.folds"
_VAL_SIZE = "data.split.val_size"
_CROSSVAL_DIR = Path("logs") / "crossval"
"""Where cross-validations live, relative to where the command runs: ``logs/crossval/<name>/``."""
_FIT_ARGS_ATTR = "crossval_fit_args"
"""The study's user attribute holding the fit options its folds are trained with."""
_COLUMNS = ("mean", "std", "min", "max", "folds")


def _in_crossval_words(message: str) -> str:
    """A refusal of the sweep's checks, as the cross-validation's."""
    for prefix in ("sweep crossval: ", "sweep: "):
        if message.startswith(prefix):
            return "crossval: " + message.removeprefix(prefix)
    return message


def _default_name(fit_args: list[str]) -> str:
    """The name of the first preset the fit options stack (``--config mnist``: ``mnist``), else ``crossval``."""
    for index, arg in enumerate(fit_args):
        name, equals, value = arg.partition("=")
        if name in ("--config", "-c"):
            value = value if equals else (fit_args[index + 1] if index + 1 < len(fit_args) else "")
            if value:
                return Path(value).stem
    return "crossval"


def _prepare(args: list[str]) -> tuple[Sweep, Any]:
    """Everything checked and decided before any folder is made: the command's own options, the fit options (by the
    command line's own parser, with each fold), the objective the folds' best checkpoints are chosen by."""
    options, fit_args = crossval_arguments(args)
    for key in user_option_keys(fit_args):
        if key in (_FOLD, _FOLDS):
            raise UserInputError(
                f"crossval: {key} is set for each fold by crossval (--folds K is the number of folds); leave it out"
            )
        if key == _VAL_SIZE:
            raise UserInputError(
                f"crossval: {key} and --folds exclude each other: each fold's validation set is its fold (1/K of "
                "the training pool); leave it out"
            )
    folds = options.folds
    spec = SweepSpec(
        path=Path("crossval"),
        options={_FOLDS: folds},
        space=[Param(_FOLD, "categorical", choices=tuple(range(folds)))],
        trials=folds,
        sampler="random",
        pruner="none",  # each fold is queued by _continue_study, once
    )
    try:
        resolved = check_fit_args(spec, fit_args)
        objective = default_objective(spec, resolved)
    except UserInputError as error:
        raise UserInputError(_in_crossval_words(str(error))) from None
    name = options.name or _default_name(fit_args)
    folder = _CROSSVAL_DIR / name
    sweep = Sweep(
        spec=spec,
        name=name,
        folder=folder,
        storage_url=f"sqlite:///{folder / 'study.db'}",
        objective=objective,
        trials=folds,
        fit_args=fit_args,
        test_after_fit=True,
        queued_only=True,  # each fold once: queued by _continue_study, never drawn by a sampler
    )
    return sweep, options


def _fold_of(trial: Any) -> int | None:
    """The fold a trial trains: its parameter, or the one it is queued with (the ``fold`` user attribute it is
    queued with)."""
    fold = trial.params.get(_FOLD, trial.user_attrs.get("fold"))
    return fold if isinstance(fold, int) else None


def _covered(study: Any) -> set[int]:
    """The folds done, being trained or queued."""
    live = ("COMPLETE", "RUNNING", "WAITING")
    return {_fold_of(trial) for trial in study.get_trials(deepcopy=False) if trial.state.name in live} - {None}


def _continue_study(sweep: Sweep, study: Any) -> None:
    """Refuse other fit options than the study's; fail the trials of killed runs (queued again, to resume); queue
    again each fold that failed."""
    import optuna

    recorded = study.user_attrs.get(_FIT_ARGS_ATTR)
    if recorded is None:
        study.set_user_attr(_FIT_ARGS_ATTR, sweep.fit_args)
    elif recorded != sweep.fit_args:
        raise UserInputError(
            f"crossval {sweep.name}: its folds are trained with other fit options ({' '.join(recorded) or 'none'}); "
            "give the same ones to continue it, or these another --name"
        )
    optuna.storages.fail_stale_trials(study)
    for fold in sorted(set(range(sweep.trials)) - _covered(study)):
        study.enqueue_trial({_FOLD: fold}, user_attrs={"fold": fold})


def _after_fold(sweep: Sweep) -> Any:
    """What runs after each fold: the results rewritten; a fold that failed stops the worker (another fold is no
    substitute for it: running the command again queues it again)."""

    def after(study: Any) -> None:
        _write_summary(sweep, study)
        failed = [
            trial
            for trial in study.get_trials(deepcopy=False)
            if trial.state.name == "FAIL" and "error" in trial.user_attrs and _fold_of(trial) not in _covered(study)
        ]
        if failed:
            trial = failed[0]
            raise UserInputError(
                f"crossval {sweep.name}: fold {_fold_of(trial)} failed ({trial.user_attrs['error']}); fix it and run "
                "the same command again (finished folds are kept)"
            )

    return after


def _run_crossval(args: list[str]) -> Sweep:
    """Check, open the study, train the folds (here, or in ``--workers N`` processes), write and print the results."""
    sweep, options = _prepare(args)
    workers = options.workers
    index, _, count = os.environ.get(WORKER_ENV, "").partition("/")
    if index:  # a worker started by --workers N
        sweep.worker, workers = int(index), 1
        threads_for(int(count))
    sweep.folder.mkdir(parents=True, exist_ok=True)
    storage = storage_for(sweep)
    try:
        study = open_study(sweep, storage)
    except UserInputError:
        raise UserInputError(
            f"crossval {sweep.name}: its study in {sweep.folder} has another number of folds or another objective; "
            "give the same --folds to continue it, or this one another --name"
        ) from None
    if not index:
        _continue_study(sweep, study)
        say(
            f"crossval {sweep.name}: {finished(counts(study))} of {sweep.trials} folds finished so far; best "
            f"checkpoint by {sweep.objective.metric} ({sweep.objective.direction}); folder {sweep.folder}"
        )
    if workers == 1:
        run_worker(sweep, after_trial=_after_fold(sweep))
    else:
        run_workers(args, workers, "crossval")
    if index:
        return sweep
    table = _write_summary(sweep, open_study(sweep, storage))
    print(table, flush=True)
    say(f"crossval {sweep.name}: results in {sweep.folder} (folds.csv, summary.md)")
    return sweep


def _fold_rows(sweep: Sweep, study: Any) -> list[dict[str, Any]]:
    """A row per fold, in order: its state, every metric its run logged, its run folder and duration (the complete
    trial of the fold, else its latest)."""
    latest: dict[int, Any] = {}
    for trial in sorted(study.get_trials(deepcopy=False), key=lambda trial: trial.number):
        fold = _fold_of(trial)
        if fold is not None and (fold not in latest or latest[fold].state.name != "COMPLETE"):
            latest[fold] = trial
    rows = []
    for fold in range(sweep.trials):
        trial = latest.get(fold)
        row: dict[str, Any] = {"fold": fold, "state": trial.state.name if trial is not None else "NOT STARTED"}
        if trial is not None and trial.state.name == "COMPLETE":
            row.update(trial.user_attrs.get("metrics") or {})
        row["run_folder"] = trial.user_attrs.get("run_folder", "") if trial is not None else ""
        row["duration_s"] = duration(trial) if trial is not None else None
        rows.append(row)
    return rows


def _statistics(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Each metric's mean, standard deviation (the sample's: n - 1; none for one fold), min and max over the
    complete folds, and how many folds logged it; ``val/`` metrics first, then ``test/``, each by name."""
    names = sorted({key for row in rows for key in row if "/" in key}, key=_metric_order)
    summary = {}
    for name in names:
        values = [float(row[name]) for row in rows if row["state"] == "COMPLETE" and name in row]
        mean = sum(values) / len(values)
        spread = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else math.nan
        summary[name] = {"mean": mean, "std": spread, "min": min(values), "max": max(values), "folds": len(values)}
    return summary


def _metric_order(name: str) -> tuple[int, str]:
    return ({"val": 0, "test": 1}.get(name.partition("/")[0], 2), name)


def _number(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.4f}"


def _write_summary(sweep: Sweep, study: Any) -> str:
    """Write ``folds.csv`` and ``summary.md`` whole; return the summary as a text table for the console."""
    rows = _fold_rows(sweep, study)
    summary = _statistics(rows)
    write_rows(sweep.folder / "folds.csv", ["fold", "state", *summary, "run_folder", "duration_s"], rows)
    complete = sum(1 for row in rows if row["state"] == "COMPLETE")
    lines = [["metric", *_COLUMNS]]
    for name, stats in summary.items():
        lines.append([name, *(_number(stats[column]) for column in _COLUMNS[:-1]), str(stats["folds"])])
    with written_whole(sweep.folder / "summary.md", "w", encoding="utf-8") as file:
        file.write(_markdown(sweep, complete, lines))
    return "\n".join([f"crossval {sweep.name}: {complete} of {sweep.trials} folds complete", *aligned(lines)])


def _markdown(sweep: Sweep, complete: int, lines: list[list[str]]) -> str:
    command = " ".join(["python -m project crossval", f"--folds {sweep.trials}", f"--name {sweep.name}"])
    command += "".join(f" {arg}" for arg in sweep.fit_args)
    rule = "|" + "---|" * len(lines[0])
    table = ["| " + " | ".join(line) + " |" for line in lines]
    return "\n".join(
        [
            f"# Cross-validation {sweep.name}: {complete} of {sweep.trials} folds complete",
            "",
            f"`{command}`",
            "",
            "Each fold's `val/` metrics are those of its best validation (by "
            f"{sweep.objective.metric}, the checkpoint it keeps), its `test/` metrics that checkpoint's on the test "
            "split. std is the sample standard deviation (n - 1). A row per fold: folds.csv.",
            "",
            table[0],
            rule,
            *table[1:],
            "",
        ]
    )


def main(args: list[str] | None = None) -> None:
    """``python -m project crossval ...``: bad input is one ``error:`` line (exit status 2)."""
    args = sys.argv[1:] if args is None else args
    quiet_optuna()
    exit_on_refusal(
        lambda: _run_crossval(args),
        "crossval: stopped by {signal}; its fold is marked interrupted (run the same command to resume it)",
    )
