"""What a sweep adds to each trial's run: its objective, pruning, and its row in TensorBoard's HParams tab.

:class:`TrialCallback` uses Lightning's public hooks only (no optuna-integration): after each validation it reports
the objective's metric to the trial (``trial.report(value, k)`` for the k-th validation of the run) and asks the
pruner; a trial to prune stops its run at that epoch's end (``trainer.should_stop``) and is told PRUNED by the
sweep. Its best value and the validations counted go into the run's checkpoints (``state_dict``), so a trial
resumed from its ``last.ckpt`` goes on where it stopped.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L

from project.errors import UserInputError
from project.reports.tensorboard import TensorBoardReports, flatten, logging_step
from project.sweeps.spec import Objective

_OBJECTIVE_TAG = "sweep/objective"
"""The scalar of the best value so far, each validation; a column of the HParams tab."""


class TrialCallback(L.Callback):
    """Reports a trial's validation metric to Optuna, prunes it when told, and keeps its best value.

    Args:
        trial: the ``optuna.Trial`` this run is.
        objective: the metric and its direction.
        sampled: the options the trial sampled (``{"model.network.init_args.width": 32}``), for HParams.
        folder_number: the number the run folder is named after (the first trial of a retried one).
        sweep_folder: the sweep's folder; the trial records its run folder relative to it (``run_folder``).
        reported: the validations the trial has already reported (a retried trial inherits them): not reported again.
    """

    def __init__(
        self,
        trial: Any,
        objective: Objective,
        sampled: dict[str, Any],
        folder_number: int,
        sweep_folder: Path,
        reported: set[int] | None = None,
    ) -> None:
        self.trial = trial
        self.objective = objective
        self.sampled = sampled
        self.folder_number = folder_number
        self.sweep_folder = sweep_folder
        self.reported = set(reported or ())
        self.best: float | None = None
        """The best value of the metric over this run's validations (the trial's value)."""
        self.validations = 0
        """How many validations the run has done (the step each is reported at)."""
        self.pruned = False
        self.run_folder: Path | None = None
        self.metrics: dict[str, float] = {}
        """Every ``val/`` metric of the best validation (the one its best checkpoint is chosen by), and every
        ``test/`` metric of the test after fit, if one ran (a cross-validation's folds: ``project.sweeps.crossval``)."""

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "validations": self.validations, "metrics": dict(self.metrics)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = state_dict.get("best")
        self.validations = int(state_dict.get("validations", 0))
        self.metrics = dict(state_dict.get("metrics") or {})

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.run_folder = Path(trainer.log_dir) if trainer.log_dir else None
        self.add_hparams(trainer)

    def add_hparams(self, trainer: L.Trainer) -> None:
        """Put the trial in its run's HParams row (written by ``TensorBoardReports`` when fit starts): the data
        module's settings, the sampled options and the trial's number, with the objective as a metric column."""
        reports = next((c for c in trainer.callbacks if isinstance(c, TensorBoardReports)), None)
        if reports is None:  # a preset without the reports: no HParams row to add to
            return
        params = flatten(trainer.datamodule.hparams, "data/") if trainer.datamodule is not None else {}
        params.update({f"sweep/{option}": value for option, value in self.sampled.items()})
        params["sweep/trial"] = self.folder_number
        reports.extra_hparams = {key: (value if value is not None else "None") for key, value in params.items()}
        reports.leading = (
            *(f"sweep/{option}" for option in self.sampled),
            "sweep/trial",
        )  # what differs between trials
        reports.extra_metrics = tuple(dict.fromkeys((self.objective.metric, _OBJECTIVE_TAG)))

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.run_folder is not None and trainer.is_global_zero:  # where a retry of this trial resumes from
            relative = os.path.relpath(self.run_folder.resolve(), self.sweep_folder.resolve())
            self.trial.set_user_attr("run_folder", Path(relative).as_posix())

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metric = self.objective.metric
        value = trainer.callback_metrics.get(metric)
        if value is None:
            logged = sorted(name for name in trainer.callback_metrics if name.startswith("val/"))
            raise UserInputError(
                f"objective {metric}: the run logs no such metric; it logs {', '.join(logged) or 'no val/ metric'}"
            )
        value = float(value)
        if self.objective.better(value, self.best):
            self.best = value
            self.metrics = _logged(trainer, "val/")
        step = self.validations
        self.validations += 1
        for logger in trainer.loggers:
            logger.log_metrics({_OBJECTIVE_TAG: self.best}, step=logging_step(trainer))
        if step not in self.reported:
            self.trial.report(value, step)
            self.reported.add(step)
        if self.trial.should_prune():
            self.pruned = True
            trainer.should_stop = True

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.metrics.update(_logged(trainer, "test/"))


def _logged(trainer: L.Trainer, prefix: str) -> dict[str, float]:
    """The scalar metrics the run has logged whose names start with ``prefix``, as floats."""
    return {
        name: float(value)
        for name, value in trainer.callback_metrics.items()
        if name.startswith(prefix) and value.numel() == 1
    }
