"""Small callbacks and readers that tests plug into real runs."""

from __future__ import annotations

import os
import signal
import time
from collections import defaultdict
from pathlib import Path

import lightning as L
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


class Interrupted(Exception):
    """Stands for a crash or a kill in the middle of a run."""


class InterruptAtEpoch(L.Callback):
    """Raise :class:`Interrupted` when epoch ``epoch`` (0-based) starts, after the previous epoch was checkpointed."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            raise Interrupted(f"interrupted at the start of epoch {self.epoch}")


def scalar_steps(run_folder: Path) -> dict[str, list[int]]:
    """For each scalar tag, the steps logged across every event file in ``run_folder`` (in file order)."""
    steps: dict[str, list[int]] = defaultdict(list)
    for event_file in sorted(run_folder.glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(event_file), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            steps[tag] += [event.step for event in accumulator.Scalars(tag)]
    return dict(steps)


class EpochTimer(L.Callback):
    """Wall-clock seconds of each training epoch, its validation included."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._start = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.seconds.append(time.perf_counter() - self._start)


class BackboneSnapshots(L.Callback):
    """A copy of the backbone's and the head's weights at the end of each training epoch."""

    def __init__(self) -> None:
        self.backbone: list[dict] = []
        self.head: list[dict] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        network = pl_module.network
        self.backbone.append({k: v.detach().clone() for k, v in network.backbone.state_dict().items()})
        self.head.append({k: v.detach().clone() for k, v in network.head.state_dict().items()})


class RankDigest(L.Callback):
    """Each DDP process writes a digest of its backbone at every epoch end to ``<folder>/rank<r>-epoch<e>.txt``."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        backbone = pl_module.network.backbone.state_dict()
        digest = ",".join(f"{name}={tensor.double().sum().item():.10e}" for name, tensor in sorted(backbone.items()))
        (self.folder / f"rank{trainer.global_rank}-epoch{trainer.current_epoch}.txt").write_text(digest)


class KillAtStep(L.Callback):
    """SIGKILL this process once ``step`` optimizer steps are done: a crash that runs no handler at all."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class SignalAtStep(L.Callback):
    """Send this process ``signal_name`` (e.g. SIGTERM) once ``step`` optimizer steps are done."""

    def __init__(self, step: int, signal_name: str = "SIGTERM") -> None:
        self.step = step
        self.signal = getattr(signal, signal_name)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signal)


class SignalInValidation(L.Callback):
    """Send this process ``signal_name`` once, during the first batch of the validation that follows optimizer step
    ``step`` (a mid-epoch validation, with ``val_check_interval`` below 1)."""

    def __init__(self, step: int, signal_name: str = "SIGTERM") -> None:
        self.step = step
        self.signal = getattr(signal, signal_name)
        self.sent = False

    def on_validation_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if not trainer.sanity_checking and trainer.global_step == self.step and not self.sent:
            self.sent = True
            os.kill(os.getpid(), self.signal)


class PoisonAtStep(L.Callback):
    """Make one weight NaN when step ``step`` starts: the loss of that step is then NaN."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        if trainer.global_step == self.step:
            with torch.no_grad():
                next(pl_module.parameters()).view(-1)[0] = float("nan")


def cli_error(args: list[str], capsys, code: int = 2, root: Path | None = None) -> str:
    """Run the command line (``python -m project ARGS``, any subcommand) with ``args``; expect exit status ``code``
    and one ``error:`` line (indented detail lines may follow), no traceback and no usage dump. With ``root``, also
    expect that nothing was written under it: no ``logs/`` folder and no checkpoint. Returns the message from its
    ``error:`` line on."""
    import pytest

    from project.__main__ import main

    checkpoints_before = set(root.rglob("*.ckpt")) if root is not None else set()
    with pytest.raises(SystemExit) as caught:
        main(args)
    stderr = capsys.readouterr().err
    assert caught.value.code == code, stderr[-3000:]
    assert "Traceback" not in stderr and "usage:" not in stderr, stderr[-3000:]
    lines = stderr.splitlines()
    starts = [index for index, line in enumerate(lines) if line.startswith("error:")]
    assert len(starts) == 1, stderr[-3000:]
    message = lines[starts[0] :]
    assert all(line.startswith(" ") or not line.strip() for line in message[1:]), stderr[-3000:]
    if root is not None:
        assert not (root / "logs").exists(), f"a log folder was written: {sorted((root / 'logs').rglob('*'))}"
        assert set(root.rglob("*.ckpt")) == checkpoints_before, "a checkpoint was written"
    return "\n".join(message)


def quiet_trainer(**kwargs: object) -> L.Trainer:
    """A CPU Trainer that writes no logs, checkpoints, progress bar or summary unless asked."""
    settings = {
        "accelerator": "cpu",
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    return L.Trainer(**{**settings, **kwargs})


class InterruptAtStep(L.Callback):
    """Raise :class:`Interrupted` once ``step`` optimizer steps are done: a crash whose logs were flushed."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        if trainer.global_step == self.step:
            raise Interrupted(f"interrupted after step {self.step}")


class RecordLR(L.Callback):
    """The learning rate of every parameter group at the start of every training batch: ``{step: [lr, ...]}``."""

    def __init__(self) -> None:
        self.by_step: dict[int, list[float]] = {}

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        self.by_step[trainer.global_step] = [group["lr"] for group in trainer.optimizers[0].param_groups]


class PoisonOptimizerAtStep(L.Callback):
    """Make one entry of AdamW's second-moment estimate infinite when step ``step`` starts (the weights stay finite:
    an update divided by an infinite second moment is zero), as a gradient too large for float32 would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        if trainer.global_step == self.step:
            state = next(iter(trainer.optimizers[0].state.values()))
            state["exp_avg_sq"].view(-1)[0] = float("inf")


def directory_scalars(run_folder: Path) -> dict[str, list[tuple[int, float]]]:
    """What TensorBoard shows for one run folder: every event file read in order, purged steps dropped."""
    accumulator = EventAccumulator(str(run_folder), size_guidance={"scalars": 0, "images": 0})
    accumulator.Reload()
    return {
        tag: [(event.step, event.value) for event in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]
    }


def directory_image_steps(run_folder: Path) -> dict[str, list[int]]:
    accumulator = EventAccumulator(str(run_folder), size_guidance={"images": 0})
    accumulator.Reload()
    return {tag: [event.step for event in accumulator.Images(tag)] for tag in accumulator.Tags()["images"]}


class WaitAtStep(L.Callback):
    """Once ``step`` optimizer steps are done, create the file ``ready`` and wait until the file ``go`` exists (at most
    ``timeout`` seconds): a run that is still training while a test does something else."""

    def __init__(self, step: int, ready: str, go: str, timeout: float = 300.0) -> None:
        self.step = step
        self.ready = Path(ready)
        self.go = Path(go)
        self.timeout = timeout

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        if trainer.global_step != self.step:
            return
        self.ready.touch()
        deadline = time.monotonic() + self.timeout
        while not self.go.exists() and time.monotonic() < deadline:
            time.sleep(0.05)


SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def script_function(script: str, name: str = "main"):
    """A function of one of the scripts in ``scripts/`` (they are files, not a package)."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(f"script_{script.removesuffix('.py')}", SCRIPTS / script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as an import does: dataclasses look their module up there
    spec.loader.exec_module(module)
    return getattr(module, name)


def run_script(script: str, args: list[str], capsys, monkeypatch) -> tuple[int, str, str]:
    """``python scripts/SCRIPT ARGS`` in this process: its exit status, stdout and stderr."""
    import runpy
    import sys

    monkeypatch.setattr(sys, "argv", [str(SCRIPTS / script), *args])
    capsys.readouterr()
    try:
        runpy.run_path(str(SCRIPTS / script), run_name="__main__")
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


def run_in_folder(folder: Path, args: list[str]):
    """``run_cli(args)`` with ``folder`` (made if need be) as the working directory, which is then restored."""
    from project.cli import run_cli

    folder.mkdir(parents=True, exist_ok=True)
    previous = Path.cwd()
    os.chdir(folder)
    try:
        return run_cli(args)
    finally:
        os.chdir(previous)


def note_fit_start(trainer: L.Trainer, pl_module: L.LightningModule) -> None:
    """A function of the tests' own (trusted) module, for ``LambdaCallback``'s ``on_fit_start`` hook."""
    trainer.fit_started_by_helpers = True


def bound_task(name: str, outputs: int, **options: object):
    """The project's task ``name`` (multiclass, binary, multilabel, regression) with ``options``, bound to a network
    of ``outputs`` outputs."""
    from project.tasks import TASKS
    from project.training.specs import metric_class

    return TASKS[name](**options).bind(outputs, metric_class)


def module_with_task(network, task: str, **arguments: object):
    """A TaskModule of ``network`` (and ``arguments``) that has taken the project's task ``task``."""
    from project.tasks import TASKS
    from project.training.task_module import TaskModule

    module = TaskModule(network, **arguments)
    module.use_task(TASKS[task]())
    return module
