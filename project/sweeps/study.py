"""The study on its storage, and the worker loop that runs trials until the study has enough (docs/sweeps.md,
"Storage and workers" and "Killed and started again").

Storage: an ``optuna.storages.RDBStorage`` (the sweep folder's ``study.db``, SQLite, by default; any database URL
with ``--storage``) with heartbeats: while a trial trains, its :class:`Heartbeat` beats every ``heartbeat.interval``
seconds. A trial silent for ``heartbeat.grace`` seconds (its worker died) is marked FAIL by the next worker to look
(:func:`look`) and, with ``--interrupted retry``, queued again; the retry resumes from its run folder's ``last.ckpt``,
or starts over without one.

No trial counted twice, none too many: a worker asks for a trial only while the study's complete, pruned and running
trials are fewer than ``trials``, waits while they are not, and stops once complete + pruned reach it. The count and
the ask happen under an exclusive lock (:func:`_ask_lock`); where a filesystem ignores it, a trial asked past the
limit is told FAIL unrun, with the reason in its ``not_run`` attribute (:func:`_excess`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from project.cli import run_cli
from project.cli.refusals import explain
from project.errors import UserInputError
from project.sweeps.spec import option_value
from project.sweeps.storage import MAX_RETRY, Sweep, open_study, pruner_for, sampler_for, storage_for
from project.sweeps.trial import TrialCallback
from project.training.checkpoints import LAST_CHECKPOINT
from project.training.progress import say


@contextlib.contextmanager
def _ask_lock(folder: Path) -> Iterator[None]:
    """Only one worker counts the study's trials and asks for one at a time: ``fcntl.flock`` on ``ask.lock`` in the
    sweep folder, which every worker sees (as it sees the run folders)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "ask.lock", "a") as file:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(file.fileno(), fcntl.LOCK_UN)


def counts(study: Any) -> dict[str, int]:
    """How many of the study's trials are in each state (``COMPLETE``, ``PRUNED``, ``RUNNING``, ...)."""
    found: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        found[trial.state.name] = found.get(trial.state.name, 0) + 1
    return found


def finished(found: dict[str, int]) -> int:
    return found.get("COMPLETE", 0) + found.get("PRUNED", 0)


class Heartbeat:
    """Records a trial's heartbeat on the storage every ``interval`` seconds while the trial runs (Optuna's own
    heartbeat thread runs inside ``study.optimize`` only; this sweep asks and tells)."""

    def __init__(self, storage: Any, trial_id: int, interval: int) -> None:
        self.storage, self.trial_id, self.interval = storage, trial_id, interval
        self.stop = threading.Event()
        self.storage.record_heartbeat(trial_id)  # at once: a trial with no heartbeat is never found stale
        self.thread = threading.Thread(target=self.beat, daemon=True, name=f"heartbeat-{trial_id}")
        self.thread.start()

    def beat(self) -> None:
        while not self.stop.wait(self.interval):
            with contextlib.suppress(Exception):  # a database hiccup: the next beat tries again
                self.storage.record_heartbeat(self.trial_id)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


def run_worker(sweep: Sweep, after_trial: Any = None) -> int:
    """Run trials until the study has ``sweep.trials`` finished ones; return how many this worker finished.
    ``after_trial(study)`` runs after each (the results files)."""
    from optuna.trial import TrialState

    storage = storage_for(sweep)
    study = open_study(sweep, storage)
    done, waited_for = 0, None
    while True:
        with _ask_lock(sweep.folder):
            found = look(sweep, study)
            if finished(found) >= sweep.trials:
                return done
            asking = finished(found) + found.get("RUNNING", 0) < sweep.trials
            if sweep.queued_only and not found.get("WAITING", 0):  # nothing queued: never a trial of its own
                if not found.get("RUNNING", 0):
                    return done
                asking = False
            if asking:
                study, trial, heartbeat = ask(sweep, storage, sum(found.values()))
        if not asking:  # the others' running trials may finish the study, or be interrupted and retried
            waited_for = wait(sweep, found.get("RUNNING", 0), waited_for)
            continue
        waited_for = None
        try:
            if _excess(study, trial.number, sweep.trials):
                trial.set_user_attr("not_run", "asked past the limit: the study had enough trials finished or running")
                study.tell(trial, state=TrialState.FAIL)
                continue
            done += run_trial(sweep, study, trial)
        finally:
            heartbeat.close()
        if after_trial is not None:
            after_trial(study)


def look(sweep: Sweep, study: Any) -> dict[str, int]:
    """Fail the trials of dead workers (retried with ``--interrupted retry``), then count the study's trials by
    state; stop a sweep whose trials keep failing with an error."""
    import optuna

    optuna.storages.fail_stale_trials(study)
    failures = sum(1 for trial in study.get_trials(deepcopy=False) if "error" in trial.user_attrs)
    if failures >= max(sweep.trials, 3):
        raise UserInputError(
            f"sweep {sweep.name}: {failures} trials failed with an error (trials.csv says which); fix the spec or "
            "its options before running more"
        )
    return counts(study)


def ask(sweep: Sweep, storage: Any, existing: int) -> tuple[Any, Any, Heartbeat]:
    """A new trial (a queued one first: a retry, or the spec's ``enqueue``), its heartbeat beating, and the study
    with this ask's sampler, seeded by the ``existing`` trials of the study (see :func:`sampler_for`)."""
    import optuna

    sampler, pruner = sampler_for(sweep, existing), pruner_for(sweep)
    study = optuna.load_study(study_name=sweep.name, storage=storage, sampler=sampler, pruner=pruner)
    trial = study.ask()
    study_id = storage.get_study_id_from_name(sweep.name)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
    return study, trial, Heartbeat(storage, trial_id, sweep.spec.heartbeat_interval)


def wait(sweep: Sweep, running: int, waited_for: int | None) -> int:
    """Wait a little for the other workers' ``running`` trials (said once per count); return the count."""
    if waited_for != running:
        say(
            f"sweep {sweep.name}: waiting for {running} running trial(s) of other workers (an interrupted one is "
            f"retried after {sweep.spec.grace_period} s without a heartbeat)"
        )
    time.sleep(min(sweep.spec.heartbeat_interval, 5))
    return running


def _excess(study: Any, number: int, limit: int) -> bool:
    """Whether trials numbered before ``number`` already make ``limit``, finished or running (see the module's
    docstring: a second worker that asked at the same moment)."""
    from optuna.trial import TrialState

    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    return sum(1 for t in study.get_trials(deepcopy=False, states=states) if t.number < number) >= limit


def frozen(study: Any, number: int) -> Any:
    return next(trial for trial in study.get_trials(deepcopy=False) if trial.number == number)


def _trial_args(sweep: Sweep, sampled: dict[str, Any], folder_name: str) -> list[str]:
    """The ``fit`` command line of one trial: the spec's presets and options, the user's, the sampled values, its
    run folder under the sweep's ``trials/``, and no test (the sweep picks by validation; a cross-validation's folds
    test their best checkpoint: ``Sweep.test_after_fit``)."""
    return [
        "fit",
        *sweep.spec.fit_args(),
        *sweep.fit_args,
        *(f"--{option}={option_value(value)}" for option, value in sampled.items()),
        f"--trainer.logger.init_args.save_dir={sweep.trials_dir}",
        f"--trainer.logger.init_args.name={folder_name}",
        f"--test_after_fit={'true' if sweep.test_after_fit else 'false'}",
    ]


def last_checkpoint(sweep: Sweep, record: Any) -> Path | None:
    """The ``last.ckpt`` of the run folder an interrupted trial recorded (:meth:`Sweep.run_folder`), if it wrote one."""
    folder = sweep.run_folder(record)
    last = folder / "checkpoints" / LAST_CHECKPOINT if folder is not None else None
    return last if last is not None and last.is_file() else None


def run_trial(sweep: Sweep, study: Any, trial: Any) -> int:
    """Train one trial and tell the study how it ended; 1 if it finished (complete or pruned), else 0."""
    import optuna

    record = frozen(study, trial.number)
    first = optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(record)
    folder_number = first if first is not None else trial.number
    sampled = {param.option: param.suggest(trial) for param in sweep.spec.space}
    args = _trial_args(sweep, sampled, f"trial_{folder_number:04d}")
    resumed = ""
    if first is not None:
        last = last_checkpoint(sweep, record)
        args += [f"--ckpt_path={last}"] if last else []
        resumed = (
            f", resuming interrupted trial {first} from {last}"
            if last
            else f", starting interrupted trial {first} over (it left no {LAST_CHECKPOINT})"
        )
    trial.set_user_attr("started", datetime.now().isoformat(timespec="seconds"))
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    values = ", ".join(f"{option}={value}" for option, value in sampled.items())
    say(f"sweep {sweep.name}: trial {trial.number} ({values}){resumed}")
    callback = TrialCallback(
        trial, sweep.objective, sampled, folder_number, sweep.folder, set(record.intermediate_values)
    )
    try:
        run_cli(args, callbacks=[callback])
    except Exception as error:
        return failed(sweep, study, trial, error)
    except BaseException:  # Ctrl-C, SIGTERM: the trial is interrupted, and retried as if its worker had died
        interrupted(sweep, study, trial)
        raise
    return told(sweep, study, trial, callback)


def failed(sweep: Sweep, study: Any, trial: Any, error: Exception) -> int:
    """Tell the study a trial failed with ``error``; raise again what is not this trial's alone."""
    from optuna.trial import TrialState

    explained = explain(error)
    if explained is not None:
        trial.set_user_attr("error", explained[0].splitlines()[0])
    study.tell(trial, state=TrialState.FAIL)
    if explained is None:  # a bug: its traceback stands
        raise error
    message, code = explained
    if code == UserInputError.exit_code:  # the options themselves: every trial would fail the same way
        raise UserInputError(f"trial {trial.number}: {message}") from None
    say(f"sweep {sweep.name}: trial {trial.number} failed: {message.splitlines()[0]}")  # (a diverged run)
    return 0


def interrupted(sweep: Sweep, study: Any, trial: Any) -> None:
    """A trial stopped by Ctrl-C or SIGTERM: FAIL, and queued again with ``--interrupted retry``, as the trial of a
    worker that died is (it resumes from its ``last.ckpt``, which SIGTERM has just written)."""
    import optuna
    from optuna.trial import TrialState

    study.tell(trial, state=TrialState.FAIL)
    if sweep.retry:
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(MAX_RETRY, inherit_intermediate_values=True)
        retry(study, frozen(study, trial.number))


def told(sweep: Sweep, study: Any, trial: Any, callback: TrialCallback) -> int:
    """Tell the study how a trial's run ended: pruned, complete with its best value, or without a validation."""
    from optuna.trial import TrialState

    if callback.pruned:
        study.tell(trial, state=TrialState.PRUNED)
        say(f"sweep {sweep.name}: trial {trial.number} pruned after {callback.validations} validation(s)")
        return 1
    if callback.best is None:
        trial.set_user_attr("error", "the run ended without a validation: nothing to take its objective from")
        study.tell(trial, state=TrialState.FAIL)
        return 0
    trial.set_user_attr("metrics", callback.metrics)
    study.tell(trial, callback.best)
    say(f"sweep {sweep.name}: trial {trial.number} {sweep.objective.metric} {callback.best:.6g}")
    return 1
