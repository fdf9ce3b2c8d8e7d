"""Experiment trackers beside TensorBoard (``--config csv``, ``--config mlflow``, ``--config wandb``): one run folder,
one run in every tracker.

TensorBoard's logger owns the run folder, ``logs/<name>/version_N``: the command line names it after the recipe,
resumes into it and locks it. Every other logger of the run (a tracker) is built only once that folder is taken and
all checks have passed, since some write as soon as they are built (MLflow's client creates its database), and it is
built for that folder (:func:`_tracker_arguments`): where the preset leaves Lightning's default, its files go under
the run's ``save_dir`` and its run is named ``<name>/version_N``. The id of each tracker's run is recorded in the
run folder (:data:`RECORD`); a resumed run hands it back to the tracker, which continues the same run.

What each tracker gets: every metric (Lightning logs them to every logger), the model's and the data's
hyper-parameters (Lightning's ``log_hyperparams``) and, where the tracker takes images, the report images
(:mod:`project.reports.images`).
"""

from __future__ import annotations

import copy
import csv
import importlib
import json
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jsonargparse import Namespace
from lightning.pytorch.cli import instantiate_class
from lightning.pytorch.loggers import CometLogger, CSVLogger, Logger, MLFlowLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from project.errors import UserInputError, first_line
from project.reports.tensorboard import flatten

RUN_FOLDER_LOGGERS = ("TensorBoardLogger", "RunLogger", "CSVLogger", "RunCSVLogger")
"""Loggers whose run folder is ``save_dir/name/version_N``: named after the recipe, resumed into, locked. In a list
of loggers the first of these owns the folder; the others are trackers."""
RECORD = "trackers.json"
"""The file in the run folder that holds each tracker's run id, by the tracker's class name."""
PACKAGES = {MLFlowLogger: "mlflow", WandbLogger: "wandb", CometLogger: "comet_ml"}
"""The package each tracker needs (its import name): checked before any work, so a missing one is one line."""
RESUME_ARGUMENTS = {MLFlowLogger: "run_id", WandbLogger: "id", CometLogger: "experiment_key"}
"""The argument that makes each tracker continue a run it started before, given the id :data:`RECORD` holds."""
_LIGHTNING_PROJECT = "lightning_logs"
"""Lightning's default MLflow experiment name: a preset that leaves it gets the run's name instead."""
_RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
"""What a tracker's run id looks like (MLflow's and Comet's are hexadecimal, wandb's alphanumeric)."""


@dataclass(frozen=True)
class RunFolder:
    """The run folder a tracker follows: ``save_dir/name/version``, resumed from ``resume_step`` (``None``: new)."""

    save_dir: Path
    name: str
    version: str
    resume_step: int | None = None

    @classmethod
    def of(cls, logger: Logger, resume_step: int | None) -> RunFolder:
        """The folder that ``logger``, the run folder's own (TensorBoard's), writes into: its version as on disk."""
        version = logger.version
        return cls(
            Path(logger.save_dir),
            str(logger.name),
            f"version_{version}" if isinstance(version, int) else str(version),
            resume_step,
        )

    @property
    def path(self) -> Path:
        return self.save_dir / self.name / self.version

    @property
    def title(self) -> str:
        """The run's name in a tracker: ``mnist/version_0``, its folder under ``save_dir``."""
        return f"{self.name}/{self.version}"


def owns_run_folder(logger_config: object) -> bool:
    """Whether a configured logger (a class path and its arguments) is one of :data:`RUN_FOLDER_LOGGERS`."""
    if not isinstance(logger_config, Namespace) or "class_path" not in logger_config:
        return False
    return str(logger_config.class_path).split(".")[-1] in RUN_FOLDER_LOGGERS


def take_trackers_out(trainer_config: Namespace) -> list[Namespace]:
    """The loggers listed beside the run folder's (``logger+:`` in ``--config mlflow``), taken out of the config's
    ``trainer.logger``, so that only the folder's logger is built with the Trainer: the trackers are built once that
    folder is taken (:func:`build`), since some write when built (MLflow's database). A list without such a logger
    stays as it is, for Lightning to build."""
    entries = trainer_config.logger
    owner = next((entry for entry in entries if owns_run_folder(entry)), None) if isinstance(entries, list) else None
    if owner is None:
        return []
    trainer_config.logger = owner
    return [entry for entry in entries if entry is not owner]


def build(configs: list[Namespace], run: RunFolder, run_ids: dict[str, str]) -> list[Logger]:
    """The trackers of ``configs``, built for ``run`` (:func:`_tracker_arguments`; ``run_ids``: their runs of an
    earlier start, by class name); each config gets the arguments it was built with, so that the run's config.yaml
    says what ran."""
    built = []
    for config in configs:
        class_path = str(config.class_path)
        init_args = dict(config.get("init_args") or {})
        init_args = _tracker_arguments(class_path, init_args, run, run_ids.get(class_path.rpartition(".")[2]))
        config.init_args = Namespace(**init_args)
        # A copy: MLflow's logger adds its run-name tag to the tags it is given, which would stay in config.yaml.
        built.append(instantiate_class((), {"class_path": class_path, "init_args": copy.deepcopy(init_args)}))
    return built


def _tracker_class(class_path: str) -> type[Logger]:
    """The logger class that ``class_path`` names (jsonargparse has resolved it to a full import path)."""
    module, _, name = class_path.rpartition(".")
    found = vars(importlib.import_module(module)).get(name)
    if not (isinstance(found, type) and issubclass(found, Logger)):
        raise UserInputError(f"trainer.logger: {class_path} is not a Lightning logger class")
    return found


def check_trackers(class_paths: list[str]) -> None:
    """Refuse, before any work, a tracker given twice and one whose package is not installed (the import error is
    said by the command line in one line, with the install command)."""
    classes = [_tracker_class(path) for path in class_paths]
    twice = sorted({cls.__name__ for cls in classes if classes.count(cls) > 1})
    if twice:
        raise UserInputError(
            f"trainer.logger: {', '.join(twice)} is given twice (a tracker preset stacked twice?); each tracker once"
        )
    for cls in classes:
        package = next((package for kind, package in PACKAGES.items() if issubclass(cls, kind)), None)
        if package is not None:
            importlib.import_module(package)  # ModuleNotFoundError names it: the command line says how to install


def _tracker_arguments(
    class_path: str, init_args: dict[str, Any], run: RunFolder, run_id: str | None
) -> dict[str, Any]:
    """``init_args`` for a tracker that follows ``run``: what the preset left at Lightning's default filled in, and
    ``run_id`` (its run of an earlier start, from :data:`RECORD`) as the argument that continues it."""
    cls, args = _tracker_class(class_path), dict(init_args)
    if issubclass(cls, CSVLogger):  # always in the run folder: metrics.csv beside TensorBoard's event files
        args.update(save_dir=str(run.save_dir), name=run.name, version=run.version)
        if issubclass(cls, RunCSVLogger):
            args["purge_step"] = run.resume_step
    elif issubclass(cls, MLFlowLogger):
        if args.get("experiment_name") in (None, _LIGHTNING_PROJECT):
            args["experiment_name"] = run.name
        args["run_name"] = args.get("run_name") or run.title
        if not args.get("tracking_uri"):  # no server named (nor MLFLOW_TRACKING_URI): SQLite, MLflow's default store
            args["tracking_uri"] = f"sqlite:///{run.save_dir / 'mlflow.db'}"
            args["artifact_location"] = args.get("artifact_location") or str(run.save_dir / "mlflow-artifacts")
        args["tags"] = {**(args.get("tags") or {}), "run_folder": str(run.path)}
    elif issubclass(cls, WandbLogger):
        if str(args.get("save_dir") or ".") == ".":
            args["save_dir"] = str(run.save_dir)  # logs/wandb/offline-run-*
        if not args.get("project") and not os.environ.get("WANDB_PROJECT"):
            args["project"] = run.name
        args["name"] = args.get("name") or run.title
    argument = next((name for kind, name in RESUME_ARGUMENTS.items() if issubclass(cls, kind)), None)
    if argument is not None and run_id is not None and not args.get(argument):
        args[argument] = run_id
    return args


def recorded_run_ids(record: Path) -> dict[str, str]:
    """The trackers' run ids an earlier start of a run recorded in its :data:`RECORD`, read as plain data."""
    if not record.is_file():
        return {}
    try:
        ids = json.loads(record.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        ids = None
    if not isinstance(ids, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in ids.items()):
        raise UserInputError(
            f"{record} is not a mapping of tracker names to run ids (JSON); remove it and the trackers start new runs"
        )
    for name, run_id in ids.items():
        if not _RUN_ID.fullmatch(run_id):
            raise UserInputError(
                f"{record}: {name}'s run id {run_id!r} is not an id (letters, digits, - and _); remove the entry and "
                f"the tracker starts a new run"
            )
    return ids


def run_ids(loggers: list[Logger], record: Path, recorded: dict[str, str]) -> dict[str, str]:
    """The id of each tracker's run, by class name, for :data:`RECORD`: what :data:`RESUME_ARGUMENTS` hands back on
    resume. Asking makes the trackers' runs (MLflow's client creates its run, wandb starts); a run of
    ``recorded`` (read from ``record``) that the tracker cannot continue is one error line."""
    ids = {}
    for logger in loggers:
        name = type(logger).__name__
        if not any(isinstance(logger, kind) for kind in RESUME_ARGUMENTS):
            continue
        try:
            _ = logger.experiment  # (wandb's version is its run's id once the run exists)
        except Exception as error:  # the tracker's own error, whatever its library raises
            if name not in recorded:
                raise
            raise UserInputError(
                f"{record}: {name} cannot continue its run {recorded[name]} ({first_line(error)}); remove the entry "
                f"and the tracker starts a new run"
            ) from None
        ids[name] = str(logger.version)
    return ids


def close(loggers: list[Logger]) -> None:
    """End the trackers' runs that Lightning leaves open (wandb's lives until the process exits), so a next run in
    the same process (a sweep's trial, a test) starts its own."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.experiment.finish()


class RunMLFlowLogger(MLFlowLogger):
    """MLflow's logger for runs that resume: a hyper-parameter changed on resume (``--model.optimizer.lr``) is not
    an error (MLflow keeps a run's parameters fixed: "Changing param values is not allowed"); the run keeps the
    first value as its parameter and gets the new one as the tag ``resumed/<name>``."""

    @rank_zero_only
    def log_hyperparams(self, params: Any) -> None:
        flat = {key: str(value)[:250] for key, value in flatten(dict(params)).items()}  # as Lightning stores them
        logged = self.experiment.get_run(self.run_id).data.params
        changed = {key: value for key, value in flat.items() if key in logged and logged[key] != value}
        for key, value in changed.items():
            self.experiment.set_tag(self.run_id, f"resumed/{key}", value)
        super().log_hyperparams({key: value for key, value in flat.items() if key not in changed})


class RunCSVLogger(CSVLogger):
    """Lightning's CSVLogger for runs that resume: ``metrics.csv`` goes on in the same file, without the rows an
    earlier start logged at or after the step it resumes from (as TensorBoard's ``purge_step`` hides them).

    Lightning's own deletes ``metrics.csv`` when its folder is not empty, which a resumed run's always is.

    Args:
        purge_step: the global step of the checkpoint a resumed run starts from (the command line sets it).
        **kwargs: see Lightning's ``CSVLogger``.
    """

    def __init__(self, save_dir: str = "logs", purge_step: int | None = None, **kwargs: Any) -> None:
        super().__init__(save_dir, **kwargs)
        self.purge_step = purge_step
        self.rows_kept = False
        metrics = Path(self.log_dir) / "metrics.csv"
        # Left by a start killed before it wrote the rows back: the whole file as it was, while the metrics.csv that
        # start was writing may hold part of them only.
        earlier = metrics.with_name("metrics-before-resume.csv")
        self.source = earlier if earlier.is_file() else metrics
        self.kept = _kept_rows(self.source, purge_step) if purge_step is not None else []
        """The earlier start's rows to keep, read (and checked) when the logger is built: before any work."""

    @property
    def experiment(self) -> Any:
        if self.rows_kept:
            return super().experiment
        metrics = Path(self.log_dir) / "metrics.csv"
        earlier = metrics.with_name("metrics-before-resume.csv")
        if self.kept and self.source == metrics:  # moved aside, not deleted, until the rows are written back
            os.replace(metrics, earlier)
        with warnings.catch_warnings():  # the folder holds TensorBoard's files; the kept rows are written below
            warnings.filterwarnings("ignore", message="Experiment logs directory .* exists and is not empty")
            experiment = super().experiment
        self.rows_kept = True
        if self.kept:
            experiment.metrics[:0] = self.kept
            experiment.save()  # at once, before training goes on
            earlier.unlink()
        return experiment


def _kept_rows(metrics: Path, purge_step: int) -> list[dict[str, float]]:
    """The rows of ``metrics`` (a CSVLogger's file) logged before ``purge_step``, their empty cells left out; one
    error line for a file that is not such a table."""
    if not metrics.is_file():
        return []
    try:
        with metrics.open(newline="", encoding="utf-8") as file:
            rows = list(csv.DictReader(file))
        parsed = [
            {key: float(value) for key, value in row.items() if value != "" and key != "step"}
            | {"step": int(row["step"])}
            for row in rows
        ]
    except (csv.Error, UnicodeDecodeError, ValueError, KeyError, TypeError) as error:
        raise UserInputError(
            f"{metrics} is not a table of metrics by step as the CSV logger writes ({type(error).__name__}: "
            f"{first_line(error)}); move it away to resume (TensorBoard's files hold the same metrics)"
        ) from None
    return [row for row in parsed if row["step"] < purge_step]
