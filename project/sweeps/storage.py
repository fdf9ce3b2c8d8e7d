"""Where a sweep's study lives: the sweep itself (:class:`Sweep`), its storage (an ``optuna.storages.RDBStorage``
with heartbeats, and the retry of interrupted trials), the study on it, refused when it searches another space,
and the sampler and pruner each ask uses. How workers use them: :mod:`project.sweeps.study`."""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from project.errors import UserInputError, causes, first_line
from project.sweeps.samplers import PRUNERS, SAMPLERS, build
from project.sweeps.spec import Objective, SweepSpec

_SPEC_ATTR = "sweep_spec"
"""The study's user attribute holding its space and objective (:meth:`SweepSpec.identity`)."""
MAX_RETRY = 3
"""How many times an interrupted trial is retried: a trial that kills its worker each time (out of memory) stops."""


@dataclass
class Sweep:
    """Everything a worker needs: the spec, the study's name and storage, the sweep folder and the user's options."""

    spec: SweepSpec
    name: str
    folder: Path
    storage_url: str
    objective: Objective
    trials: int
    fit_args: list[str] = field(default_factory=list)
    """The user's own ``fit`` options from the command line, after the spec's."""
    retry: bool = True
    worker: int = 0
    """This worker's index (seeds its sampler: two workers never draw from the same seed)."""
    test_after_fit: bool = False
    """Whether each trial tests its best checkpoint after fit (a cross-validation's folds do; a sweep picks by
    validation alone)."""
    queued_only: bool = False
    """Whether the trials are only those queued (a cross-validation's folds): a worker never samples one of its own,
    and stops when none is waiting and none is running."""

    @property
    def trials_dir(self) -> Path:
        return self.folder / "trials"

    def run_folder(self, trial: Any) -> Path | None:
        """The run folder ``trial`` recorded (its ``run_folder`` attribute, relative to the sweep folder), or ``None``
        when it recorded none or one outside :attr:`trials_dir`: the study may live in a database that others write
        to, and a path read from it never chooses what the sweep reads (the checkpoint a retry resumes, the config
        best.yaml copies)."""
        recorded = trial.user_attrs.get("run_folder")
        if not isinstance(recorded, str) or not recorded:
            return None
        folder = self.folder / recorded
        return folder if folder.resolve().is_relative_to(self.trials_dir.resolve()) else None


def quiet_optuna() -> None:
    """Optuna's own INFO lines (one per trial) and its experimental-feature warnings (heartbeats, the matplotlib
    plots) say nothing the sweep's own lines do not."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # Optuna warns that heartbeats are for study.optimize, which beats for its trials; this sweep asks and tells, and
    # its own Heartbeat thread records them.
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")


def _check_optuna_version() -> None:
    """Optuna 4.9 names the heartbeat's callbacks as this module uses them (``heartbeat_stale_trial_callback``)."""
    import optuna

    version = tuple(int(part) for part in optuna.__version__.split(".")[:2] if part.isdigit())
    if version < (4, 9):
        raise UserInputError(
            f'sweeps need optuna 4.9 or newer (installed: {optuna.__version__}): pip install -e ".[sweep]" --upgrade'
        )


def database_url(url: str) -> str:
    """``url`` with the PostgreSQL driver that is installed: SQLAlchemy 2.1 reads ``postgresql://`` as psycopg 3,
    while the ``sweep`` extra installs psycopg2 (``postgresql+psycopg2://``)."""
    import importlib.util

    scheme, separator, rest = url.partition("://")
    only_psycopg2 = importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None
    if scheme == "postgresql" and separator and only_psycopg2:
        return f"postgresql+psycopg2://{rest}"
    return url


def storage_for(sweep: Sweep) -> Any:
    """The study's RDBStorage with heartbeats, and the retry of interrupted trials when ``sweep.retry``."""
    import optuna
    import sqlalchemy.exc

    quiet_optuna()
    _check_optuna_version()
    engine_kwargs = {"connect_args": {"timeout": 60}} if sweep.storage_url.startswith("sqlite") else {}
    retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY, inherit_intermediate_values=True)
    try:
        return optuna.storages.RDBStorage(
            database_url(sweep.storage_url),
            engine_kwargs=engine_kwargs,
            heartbeat_interval=sweep.spec.heartbeat_interval,
            grace_period=sweep.spec.grace_period,
            heartbeat_stale_trial_callback=retry if sweep.retry else None,
        )
    except (ImportError, ValueError, sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as error:
        cause = next((e for e in causes(error) if isinstance(e, sqlalchemy.exc.DBAPIError)), error)
        message = first_line(cause.orig if isinstance(cause, sqlalchemy.exc.DBAPIError) else cause)
        message = _without_password(message, sweep.storage_url)
        raise UserInputError(f"--storage {shown_url(sweep.storage_url)}: cannot open it ({message})") from None


def shown_url(url: str) -> str:
    """``url`` as it may be printed: its password, if any, as ``***`` (SQLAlchemy's own rendering)."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy reads: say what was given, without anything between ':' and '@'
        return re.sub(r"(//[^/:@]*:)[^/@]*@", r"\1***@", url)


def _without_password(message: str, url: str) -> str:
    """``message`` (a driver's error) with the password of ``url`` masked, should the driver repeat it."""
    from sqlalchemy.engine import make_url

    try:
        password = make_url(url).password
    except Exception:
        return message
    return message.replace(str(password), "***") if password else message


def open_study(sweep: Sweep, storage: Any) -> Any:
    """The sweep's study on ``storage``, created (with the spec's queued trials) if it does not exist yet; refused
    when the study there searches another space or objective."""
    import optuna

    identity = sweep.spec.identity(sweep.objective)
    try:
        study = optuna.create_study(
            study_name=sweep.name, storage=storage, direction=sweep.objective.direction, load_if_exists=False
        )
        study.set_user_attr(_SPEC_ATTR, identity)
        for params in sweep.spec.enqueue:
            study.enqueue_trial(params)
        return study
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=sweep.name, storage=storage)
    stored = study.user_attrs.get(_SPEC_ATTR)
    if stored is not None and stored != identity:
        raise UserInputError(
            f"sweep {sweep.name}: its study ({shown_url(sweep.storage_url)}) searches another space or objective "
            f"({stored}); run the same spec to continue it, or give the new one another --name"
        )
    direction = study.direction.name.lower()
    if direction != sweep.objective.direction:
        raise UserInputError(
            f"sweep {sweep.name}: its study is to {direction}, the spec's objective to "
            f"{sweep.objective.direction}; give the new one another --name"
        )
    return study


def sampler_for(sweep: Sweep, existing: int) -> Any:
    """The spec's sampler for an ask when the study holds ``existing`` trials, seeded by that count and the worker:
    every ask, every worker and every restart of a worker draws from a seed of its own (docs/design_notes.md)."""
    seed = sweep.spec.seed + 1_000_003 * sweep.worker + existing
    return build(sweep.spec.sampler, {**sweep.spec.sampler_args, "seed": seed}, SAMPLERS)


def pruner_for(sweep: Sweep) -> Any:
    return build(sweep.spec.pruner, sweep.spec.pruner_args, PRUNERS)
