"""A sweep's results, rewritten whole after every trial (each file atomically: a reader never sees half of one):

- ``trials.csv``: one row per trial: number, state, objective, each sampled option, run folder, duration in
  seconds, the trial it retries, and why it failed;
- ``history.png`` (the objective trial by trial, and the best so far), ``intermediate.png`` (each trial's
  validation curve: where pruning stopped it) and ``importance.png`` (how much each option explains the
  objective: PED-ANOVA, which needs no scikit-learn; from 2 complete trials on), Optuna's matplotlib plots;
- ``best.yaml``: the best trial's full config (its run folder's ``config.yaml``) without what belongs to that run
  (its logger's folder, name and version; the checkpoint; the sweep's no-test), a preset to train from:
  ``python -m project fit --config logs/sweeps/NAME/best.yaml`` (a new run, ``logs/best/version_N``, then tested).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import yaml

from project.files.atomic import written_whole
from project.files.tables import spreadsheet_safe
from project.files.yaml_text import read_yaml
from project.sweeps.storage import Sweep
from project.training.progress import say

_RUN_ENTRIES = ("ckpt_path", "test_after_fit")
"""Top-level entries of a trial's config that belong to its run, not to its recipe."""
_LOGGER_RUN_ENTRIES = ("save_dir", "name", "version", "purge_step")


def write_results(sweep: Sweep, study: Any) -> list[str]:
    """Write every results file of ``study`` into the sweep folder; return the notes on what was skipped."""
    trials = study.get_trials(deepcopy=False)
    _write_table(sweep, trials)
    notes = _write_plots(sweep, study, trials)
    best = best_trial(trials, sweep)
    if best is not None:
        write_best(sweep, best)
    else:
        notes.append("best.yaml: no complete trial yet")
    return notes


def duration(trial: Any) -> float | None:
    if trial.datetime_start is None or trial.datetime_complete is None:
        return None
    return round((trial.datetime_complete - trial.datetime_start).total_seconds(), 1)


def rows(sweep: Sweep, trials: list[Any]) -> list[dict[str, Any]]:
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    table = []
    for trial in trials:
        row: dict[str, Any] = {"number": trial.number, "state": trial.state.name, "objective": trial.value}
        row.update({param.option: trial.params.get(param.option) for param in sweep.spec.space})
        row["run_folder"] = trial.user_attrs.get("run_folder", "")
        row["duration_s"] = duration(trial)
        row["worker"] = trial.user_attrs.get("worker", "")
        row["retry_of"] = RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)
        row["error"] = trial.user_attrs.get("error") or trial.user_attrs.get("not_run") or ""
        table.append(row)
    return table


def _write_table(sweep: Sweep, trials: list[Any]) -> None:
    columns = ["number", "state", "objective", *(p.option for p in sweep.spec.space)]
    columns += ["run_folder", "duration_s", "worker", "retry_of", "error"]
    write_rows(sweep.folder / "trials.csv", columns, rows(sweep, trials))


def write_rows(path: Path, columns: list[str], table: list[dict[str, Any]]) -> None:
    """``table`` as a CSV file of ``columns`` (each value a :func:`cell`), written whole or not at all."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in table:
        writer.writerow({key: cell(value) for key, value in row.items()})
    with written_whole(path, "w", encoding="utf-8") as file:
        file.write(text.getvalue())


def aligned(lines: list[list[str]]) -> list[str]:
    """Rows of text cells as lines of a console table, each column as wide as its widest cell."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() for line in lines]


def cell(value: Any) -> Any:
    """A value as ``trials.csv`` holds it: nothing for ``None``, text a spreadsheet shows as text (an error message,
    a worker's host name, a categorical choice)."""
    if value is None:
        return ""
    return spreadsheet_safe(value) if isinstance(value, str) else value


def _write_plots(sweep: Sweep, study: Any, trials: list[Any]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window (and no display on a cluster node)
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as plots
    from optuna.importance import PedAnovaImportanceEvaluator
    from optuna.trial import TrialState

    complete = [trial for trial in trials if trial.state == TrialState.COMPLETE]
    notes = []
    drawings = {
        "history.png": (lambda: plots.plot_optimization_history(study), len(complete) >= 1),
        "intermediate.png": (
            lambda: plots.plot_intermediate_values(study),
            any(trial.intermediate_values for trial in trials),
        ),
        "importance.png": (
            lambda: plots.plot_param_importances(study, evaluator=PedAnovaImportanceEvaluator()),
            len(complete) >= 2,
        ),
    }
    for name, (draw, possible) in drawings.items():
        if not possible:
            notes.append(f"{name}: not drawn yet ({len(complete)} complete trial(s))")
            continue
        try:
            axes = draw()
        except (ValueError, RuntimeError, ZeroDivisionError) as error:  # e.g. every trial has the same value
            notes.append(f"{name}: not drawn ({str(error).strip().splitlines()[0] if str(error).strip() else error})")
            continue
        figure = axes.figure
        try:
            figure.set_size_inches(8, 5)
            figure.tight_layout()
            with written_whole(sweep.folder / name) as file:
                figure.savefig(file, format="png", dpi=100)
        finally:
            plt.close(figure)
    return notes


def best_trial(trials: list[Any], sweep: Sweep) -> Any:
    from optuna.trial import TrialState

    complete = [trial for trial in trials if trial.state == TrialState.COMPLETE and trial.value is not None]
    if not complete:
        return None
    sign = 1 if sweep.objective.direction == "maximize" else -1
    return max(complete, key=lambda trial: (sign * trial.value, -trial.number))  # the first of equal ones


def _best_config(config: dict[str, Any]) -> dict[str, Any]:
    """A trial's saved config without what belongs to its run, so that training from it makes a new run."""
    config = {key: value for key, value in config.items() if key not in _RUN_ENTRIES}
    logger = (config.get("trainer") or {}).get("logger")
    if isinstance(logger, dict) and isinstance(logger.get("init_args"), dict):
        logger["init_args"] = {k: v for k, v in logger["init_args"].items() if k not in _LOGGER_RUN_ENTRIES}
    return config


def write_best(sweep: Sweep, trial: Any) -> None:
    folder = sweep.run_folder(trial)
    saved = folder / "config.yaml" if folder is not None else None
    if saved is None or not saved.is_file():
        where = folder if folder is not None else f"a run folder under {sweep.trials_dir}"
        say(f"sweep {sweep.name}: best.yaml not written: trial {trial.number} has no config.yaml in {where}")
        return
    config = _best_config(read_yaml(saved.read_text(), str(saved)))
    header = (
        f"# The best trial of sweep {sweep.name}: trial {trial.number}, {sweep.objective.metric} = {trial.value:.6g}"
        f" ({folder}).\n# Train it again (a new run, then tested): python -m project fit --config "
        f"{sweep.folder / 'best.yaml'}\n"
    )
    with written_whole(sweep.folder / "best.yaml", "w", encoding="utf-8") as file:
        file.write(header + yaml.safe_dump(config, sort_keys=False))


def summary_table(sweep: Sweep, study: Any, limit: int = 30) -> str:
    """The trials as a short text table (the best first), with the study's counts."""
    table = rows(sweep, study.get_trials(deepcopy=False))
    names = _short_names([param.option for param in sweep.spec.space])
    sign = -1 if sweep.objective.direction == "maximize" else 1
    table.sort(key=lambda row: (row["objective"] is None, sign * (row["objective"] or 0), row["number"]))
    header = ["trial", "state", sweep.objective.metric, *names.values(), "run folder"]
    lines = [header]
    for row in table[:limit]:
        objective = "" if row["objective"] is None else f"{row['objective']:.6g}"
        values = [_format_value(row[option]) for option in names]
        lines.append([str(row["number"]), row["state"], objective, *values, row["run_folder"]])
    text = aligned(lines)
    if len(table) > limit:
        text.append(f"... and {len(table) - limit} more in {sweep.folder / 'trials.csv'}")
    return "\n".join(text)


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def _short_names(options: list[str]) -> dict[str, str]:
    """Each option by its last part (``lr``), or more of it where two would read the same."""
    names = {}
    for option in options:
        parts = option.split(".")
        for size in range(1, len(parts) + 1):
            name = ".".join(parts[-size:])
            if sum(1 for other in options if other == name or other.endswith(f".{name}")) == 1:
                break
        names[option] = name
    return names
