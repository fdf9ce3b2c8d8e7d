"""``python -m project sweep SPEC [--trials N] [--workers N] [--storage URL] [--name NAME] [--interrupted retry|skip]
[fit options...]``: check everything, then run the workers and write the results.

Before any folder is made or trial run, the sweep's own options are parsed
(:func:`project.cli.commands.sweep_arguments`: the command line's parser, its style and its refusals), the spec is
read (:mod:`project.sweeps.spec`) and the command line's own
parser reads each trial's ``fit`` arguments with values at the ends of every range and each of every list of
choices (``fit --print_config``): an unknown option (with the closest name), a value an option does not take, a
preset that does not exist, each is one ``error:`` line.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from project.cli import run_cli
from project.cli.commands import sweep_arguments
from project.cli.refusals import exit_on_refusal
from project.errors import UserInputError
from project.files.yaml_text import read_yaml
from project.sweeps.spec import Objective, SweepSpec, load_spec, option_key, option_value
from project.sweeps.storage import Sweep, open_study, quiet_optuna, shown_url, storage_for
from project.sweeps.study import counts, finished, run_worker
from project.training.progress import say

_SWEEPS_DIR = Path("logs") / "sweeps"
"""Where sweeps live, relative to where the command runs: ``logs/sweeps/<name>/``."""
WORKER_ENV = "PROJECT_SWEEP_WORKER"
"""``<index>/<count>``: set for the worker processes ``--workers N`` starts (their sampler seeds, their threads)."""
SAFE_PATH = ["-P"] if sys.version_info >= (3, 11) else []
"""A worker's interpreter puts no folder of the current one on ``sys.path`` (``python -P``, Python 3.11+; on 3.10,
``project/__init__.py`` takes it off for ``-m``)."""


def user_option_keys(args: list[str]) -> list[str]:
    """The option names in the user's ``fit`` arguments (``--data.data_dir DIR``: ``data.data_dir``)."""
    return [arg.partition("=")[0].removeprefix("--") for arg in args if arg.startswith("--")]


def check_fit_args(spec: SweepSpec, fit_args: list[str]) -> dict[str, Any]:
    """Read each trial's ``fit`` arguments with the command line's parser, at the ends of every range and each
    choice in turn; return the config the first of them resolves to."""
    for key in user_option_keys(fit_args):
        if key in ("config", "trust"):  # presets stack after the spec's; the command line may trust a module
            continue
        option_key(key, "sweep: fit options")  # refuses the sweep's own (the logger, ckpt_path, test_after_fit)
        searched = next((param for param in spec.space if param.option == key), None)
        if searched is not None:
            raise UserInputError(f"sweep: {key} is searched by the spec's space; leave it out of the fit options")
    probes = max(2, *(len(param.choices) for param in spec.space))
    resolved: dict[str, Any] = {}
    for index in range(probes):
        sampled = [f"--{param.option}={option_value(param.probe(index))}" for param in spec.space]
        printed = io.StringIO()
        try:
            with contextlib.redirect_stdout(printed):
                run_cli(["fit", *spec.fit_args(), *fit_args, *sampled, "--print_config"])
        except SystemExit as exit_:
            if exit_.code not in (0, None):
                raise UserInputError(f"sweep: the fit options were refused ({printed.getvalue().strip()})") from None
        except UserInputError as error:
            raise UserInputError(f"sweep {spec.path}: {error}") from None
        if index == 0:
            resolved = read_yaml(printed.getvalue(), "sweep: the resolved fit config") or {}
    _check_trial_folders(resolved)
    logger = (resolved.get("trainer") or {}).get("logger")
    if isinstance(logger, list):  # a tracker preset: the sweep names each trial's folder by the one logger's options
        raise UserInputError(
            "sweep: trackers beside TensorBoard (--config csv, mlflow, wandb) do not work in a sweep yet; leave them "
            "out (each trial is a row of trials.csv and of TensorBoard's HParams)"
        )
    class_path = logger.get("class_path", "") if isinstance(logger, dict) else str(logger)
    if class_path.split(".")[-1] not in ("RunLogger", "TensorBoardLogger"):
        raise UserInputError(
            f"sweep: each trial needs its run folder, but the presets set trainer.logger to {class_path}; keep "
            "base.yaml's project.reports.tensorboard.RunLogger (no --config study)"
        )
    return resolved


def _check_trial_folders(resolved: dict[str, Any]) -> None:
    """Refuse options that would write a trial's files outside its own folder (``logs/sweeps/NAME/trials/``), which
    the sweep chooses: ``trainer.default_root_dir``, a callback's ``dirpath``, a logger ``sub_dir`` that leaves the
    run folder."""
    trainer = resolved.get("trainer") or {}
    where = "each trial writes into its own folder under logs/sweeps/NAME/trials/, which the sweep chooses"
    if trainer.get("default_root_dir") is not None:
        raise UserInputError(f"sweep: trainer.default_root_dir is set ({trainer['default_root_dir']}): {where}")
    callbacks = trainer.get("callbacks") or []
    for callback in callbacks if isinstance(callbacks, list) else [callbacks]:
        init_args = callback.get("init_args") if isinstance(callback, dict) else None
        if isinstance(init_args, dict) and init_args.get("dirpath") is not None:
            name = str(callback.get("class_path")).rpartition(".")[2]
            raise UserInputError(f"sweep: the {name} callback's dirpath is set ({init_args['dirpath']}): {where}")
    logger = trainer.get("logger")
    init_args = logger.get("init_args") if isinstance(logger, dict) else None
    sub_dir = init_args.get("sub_dir") if isinstance(init_args, dict) else None
    if sub_dir is not None and (Path(str(sub_dir)).is_absolute() or ".." in Path(str(sub_dir)).parts):
        raise UserInputError(
            f"sweep: trainer.logger.init_args.sub_dir {sub_dir!r} leaves the trial's run folder: {where}; give a "
            "folder name inside it, or leave it out"
        )


def default_objective(spec: SweepSpec, resolved: dict[str, Any]) -> Objective:
    """The spec's objective, or the task's monitored metric and direction (the model's
    ``monitored_metric``: ``val/acc`` to maximise, ``val/loss`` to minimise for regression, ...)."""
    if spec.metric is not None:
        return Objective(spec.metric, spec.direction or "maximize")
    from lightning.pytorch.cli import instantiate_class

    from project.data.base import ImageDataModule
    from project.tasks import TASKS, Task
    from project.training.checkpoints import named_class

    data = instantiate_class((), resolved["data"])  # the data module's arguments only: nothing is read yet
    if not isinstance(data, ImageDataModule):
        raise UserInputError("sweep: the data module is not an ImageDataModule; name the objective in the spec")
    named = (resolved.get("model") or {}).get("task")  # a task the config names (the parser imported its class)
    task = named_class(named["class_path"]) if isinstance(named, dict) else None
    metric, mode = (task if isinstance(task, type) and issubclass(task, Task) else TASKS[data.task]).monitor
    return Objective(metric, "maximize" if mode == "max" else "minimize")


def prepare(args: list[str]) -> tuple[Sweep, Any]:
    """Everything checked and decided before any file is written."""
    options, fit_args = sweep_arguments(args)
    spec = load_spec(options.spec)
    resolved = check_fit_args(spec, fit_args)
    objective = default_objective(spec, resolved)
    name = options.name or spec.path.stem
    folder = _SWEEPS_DIR / name
    storage = options.storage or f"sqlite:///{folder / 'study.db'}"
    sweep = Sweep(
        spec=spec,
        name=name,
        folder=folder,
        storage_url=storage,
        objective=objective,
        trials=options.trials or spec.trials,
        fit_args=fit_args,
        retry=options.interrupted == "retry",
    )
    return sweep, options


def run_sweep(args: list[str]) -> Sweep:
    """Check, open the study, run the worker(s), write the results and print the table.

    ``--workers 1`` runs the trials in this process; ``--workers N`` starts N worker processes (this one waits for
    them), each with its share of the CPU's threads (``torch.set_num_threads``).
    """
    from project.sweeps.results import summary_table, write_results

    sweep, options = prepare(args)
    workers = options.workers
    index, _, count = os.environ.get(WORKER_ENV, "").partition("/")
    if index:  # a worker started by --workers N
        sweep.worker, workers = int(index), 1
        threads_for(int(count))
    elif os.environ.get("SLURM_ARRAY_TASK_ID", "").isdigit():  # one worker of a SLURM array
        sweep.worker = int(os.environ["SLURM_ARRAY_TASK_ID"])
    if options.storage is None:  # the SQLite file goes in the sweep folder; a --storage URL is opened first
        sweep.folder.mkdir(parents=True, exist_ok=True)
    storage = storage_for(sweep)
    sweep.folder.mkdir(parents=True, exist_ok=True)
    study = open_study(sweep, storage)
    if not index:
        say(
            f"sweep {sweep.name}: {finished(counts(study))} of {sweep.trials} trials finished so far; objective "
            f"{sweep.objective.metric} ({sweep.objective.direction}); study {shown_url(sweep.storage_url)}; folder "
            f"{sweep.folder}"
        )
    if workers == 1:
        run_worker(sweep, after_trial=lambda study: write_results(sweep, study))
    else:
        run_workers(args, workers)
    if index:
        return sweep
    study = open_study(sweep, storage)
    for note in write_results(sweep, study):
        say(f"sweep {sweep.name}: {note}")
    print(summary_table(sweep, study), flush=True)
    say(f"sweep {sweep.name}: results in {sweep.folder} (trials.csv, best.yaml, *.png)")
    return sweep


def run_workers(args: list[str], workers: int, command: str = "sweep") -> None:
    """Start ``workers`` processes of this same ``command`` (``sweep``, ``crossval``), each a worker of the study, and
    wait for them all; their output comes through this one, each line labelled with the trial its worker runs
    (:func:`relay_output`)."""
    children = [
        subprocess.Popen(
            [sys.executable, *SAFE_PATH, "-m", "project", command, *args],
            env={**os.environ, WORKER_ENV: f"{i}/{workers}", "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            encoding="utf-8",
            errors="replace",
        )
        for i in range(workers)
    ]
    relays = [threading.Thread(target=relay_output, args=(child, i), daemon=True) for i, child in enumerate(children)]
    for relay in relays:
        relay.start()

    def stop_workers(signum: int, frame: Any) -> None:  # a preempted job or Ctrl-C: every worker marks its trial
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop_workers)
    codes = [child.wait() for child in children]
    for relay in relays:
        relay.join()
    for stopped in (128 + signal.SIGTERM, 128 + signal.SIGINT):  # not failed: the same command continues the study
        if stopped in codes:
            raise SystemExit(stopped)
    if any(codes):
        raise UserInputError(f"{command}: worker(s) stopped with exit status {codes} (their error above)")


_TRIAL_LINE = re.compile(r"^sweep .*?: trial (\d+) \(")
"""The line a worker says as it starts a trial (:func:`project.sweeps.study.run_trial`)."""


def relay_output(child: subprocess.Popen[str], index: int) -> None:
    """Print worker ``index``'s output (stdout and stderr, each to this process's) as it comes, each line led by
    ``[trial N]``, the trial the worker runs (``[worker K]`` before its first), so that two workers' lines can be
    told apart."""
    label = [f"[worker {index}]"]

    def relay(stream: Any, out: Any) -> None:
        for line in stream:
            started = _TRIAL_LINE.match(line)
            if started:
                label[0] = f"[trial {started.group(1)}]"
            out.write(f"{label[0]} {line}")
            out.flush()

    errors = threading.Thread(target=relay, args=(child.stderr, sys.stderr), daemon=True)
    errors.start()
    relay(child.stdout, sys.stdout)
    errors.join()


def threads_for(workers: int) -> None:
    """This worker's share of the CPU's threads, when ``workers`` share the machine."""
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(max(1, cores // workers))


def main(args: list[str] | None = None) -> None:
    """``python -m project sweep ...`` and ``scripts/sweep.py``: bad input is one ``error:`` line (exit status 2)."""
    args = sys.argv[1:] if args is None else args
    quiet_optuna()
    exit_on_refusal(
        lambda: run_sweep(args),
        "sweep: stopped by {signal}; its trial is marked interrupted (run the same command to continue the study)",
    )
