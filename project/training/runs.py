"""Where runs live on disk, and which checkpoint ``--ckpt_path`` means.

Each run writes into one TensorBoard version folder and keeps its checkpoints inside it::

    logs/<name>/version_<N>/
        events.out.tfevents.*      TensorBoard scalars (one file per process that wrote to the run)
        hparams.yaml
        run.lock                   while a process trains into the run (project.training.run_lock)
        checkpoints/
            epoch=<e>-step=<s>.ckpt  the best checkpoint so far (by the monitored validation metric)
            last.ckpt                the newest state: resume from it

Lightning alone resolves ``--ckpt_path last`` against the checkpoint folder of the *new* run it is starting (which
is empty) and logs a resumed run into a new version folder (Lightning issues #5403, #2735); it also reads the files
that ``best`` and ``hpc`` name without this project's checks. :func:`_resolve_checkpoint` gives every name one
meaning here, and every file it returns has been read with :func:`~project.training.checkpoints.read_checkpoint`;
:func:`choose_checkpoint` says what each name means for each subcommand, and which run it took.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from project.errors import CheckpointNotFoundError, UserInputError
from project.training.checkpoints import LAST_CHECKPOINT, read_checkpoint
from project.training.run_lock import live_holder

_VERSION_FOLDER = re.compile(r"version_\d+")
_HPC_CHECKPOINT = re.compile(r"hpc_ckpt_(\d+)\.ckpt")


def find_last_checkpoint(run_root: Path, skip: Collection[Path] = ()) -> Path | None:
    """The most recently written ``version_*/checkpoints/last.ckpt`` under ``run_root`` (of a run folder not in
    ``skip``), or ``None``."""
    skipped = {Path(folder).resolve() for folder in skip}
    candidates = [
        path
        for path in run_root.glob(f"version_*/checkpoints/{LAST_CHECKPOINT}")
        if path.is_file() and path.parent.parent.resolve() not in skipped
    ]
    return max(candidates, key=lambda path: path.stat().st_mtime_ns, default=None)


def _live_runs(run_root: Path) -> dict[Path, str]:
    """The run folders under ``run_root`` that a live process trains into now, and who
    (:mod:`~project.training.run_lock`)."""
    folders = sorted(path for path in run_root.glob("version_*") if _VERSION_FOLDER.fullmatch(path.name))
    return {folder: holder for folder in folders if (holder := live_holder(folder))}


def claim_new_run(run_root: Path) -> int:
    """Make the folder of a new run, ``run_root/version_<N>`` with N past the highest in use, and return N: ``mkdir``
    fails for a folder another run made meanwhile, so two runs starting at once never share one."""
    run_root.mkdir(parents=True, exist_ok=True)
    numbers = [int(path.name[len("version_") :]) for path in run_root.iterdir() if _VERSION_FOLDER.fullmatch(path.name)]
    number = max(numbers, default=-1) + 1
    while True:
        try:
            (run_root / f"version_{number}").mkdir()
            return number
        except FileExistsError:
            number += 1


def _version_of(checkpoint: Path, run_root: Path) -> str | None:
    """``version_N`` if ``checkpoint`` lies in ``run_root/version_N/checkpoints/``, else ``None``."""
    folder = checkpoint.resolve().parent
    if folder.name != "checkpoints" or folder.parent.parent != run_root.resolve():
        return None
    version = folder.parent.name
    return version if _VERSION_FOLDER.fullmatch(version) else None


def _find_hpc_checkpoint(root: Path) -> Path | None:
    """The ``hpc_ckpt_<N>.ckpt`` with the highest N in ``root`` (where Lightning's SLURM requeue writes them)."""
    numbered = {}
    for path in root.glob("hpc_ckpt_*.ckpt"):
        if match := _HPC_CHECKPOINT.fullmatch(path.name):
            numbered[int(match.group(1))] = path
    return numbered[max(numbered)] if numbered else None


def _best_checkpoint_of(last: Path, last_content: dict[str, Any]) -> Path | None:
    """The best checkpoint recorded in ``last``'s ModelCheckpoint state, looked up beside ``last``."""
    for state in last_content.get("callbacks", {}).values():
        best = state.get("best_model_path") if isinstance(state, dict) else None
        if isinstance(best, str) and best and (last.parent / Path(best).name).is_file():
            return last.parent / Path(best).name
    return None


def _resolve_checkpoint(
    ckpt_path: str, run_root: Path, root_dir: Path = Path("."), skip: Collection[Path] = ()
) -> tuple[Path, dict[str, Any]]:
    """The checkpoint that ``--ckpt_path`` names, read and checked.

    - ``last``: the newest ``last.ckpt`` under ``run_root``, of a run folder not in ``skip`` (or, when it is
      unreadable, the newest readable checkpoint beside it: :func:`_readable_last`);
    - ``best``: the best checkpoint of that same run (as its ``last.ckpt`` records it);
    - ``hpc``: the newest ``hpc_ckpt_<N>.ckpt`` in ``root_dir`` (Lightning's SLURM requeue);
    - ``auto`` is :func:`_newest_to_resume`, which may find nothing;
    - anything else: a file path. Lightning's model registry is refused: it downloads files, unchecked.
    """
    if ckpt_path == "registry" or ckpt_path.startswith("registry:"):
        raise UserInputError(
            f"--ckpt_path {ckpt_path}: Lightning's model registry is not supported here (it downloads a checkpoint "
            f"and skips this project's checks); download the file yourself and pass the path of a checkpoint file"
        )
    if ckpt_path == "hpc":
        found = _find_hpc_checkpoint(root_dir)
        if found is None:
            raise CheckpointNotFoundError(f"--ckpt_path hpc: no hpc_ckpt_<N>.ckpt in {root_dir.resolve()}")
        return found, read_checkpoint(found)
    if ckpt_path not in ("last", "best"):
        path = Path(ckpt_path).expanduser()
        if not path.is_file():
            raise CheckpointNotFoundError(
                f"--ckpt_path {ckpt_path}: no such checkpoint file. Pass 'last' for the newest run's last.ckpt "
                f"under {run_root}, or the path of a .ckpt file."
            )
        return path, read_checkpoint(path)
    found = find_last_checkpoint(run_root, skip)
    if found is None:
        busy = f" but of runs still training ({', '.join(str(folder) for folder in skip)})" if skip else ""
        raise CheckpointNotFoundError(
            f"--ckpt_path {ckpt_path}: no {LAST_CHECKPOINT} under {run_root}/version_*/checkpoints/{busy}, so there "
            f"is no run to take. Start a new run without --ckpt_path, or pass the path of a checkpoint file."
        )
    if ckpt_path == "best":
        best = _best_checkpoint_of(found, read_checkpoint(found))
        if best is None:
            raise CheckpointNotFoundError(f"--ckpt_path best: {found} records no best checkpoint beside it")
        return best, read_checkpoint(best)
    return _readable_last(found)


def _newest_to_resume(
    run_root: Path, root_dir: Path, skip: Collection[Path] = ()
) -> tuple[Path, dict[str, Any]] | None:
    """``--ckpt_path auto``: the run's ``last.ckpt`` or the newest ``hpc_ckpt_<N>.ckpt`` (Lightning's SLURM requeue),
    whichever holds more optimizer steps; ``None`` when there is neither (a job's first start: train from scratch)."""
    found = []
    if find_last_checkpoint(run_root, skip) is not None:
        found.append(_resolve_checkpoint("last", run_root, root_dir, skip))
    hpc = _find_hpc_checkpoint(root_dir)
    if hpc is not None:
        found.append((hpc, read_checkpoint(hpc)))
    return max(found, key=lambda item: (item[1]["global_step"], item[0].stat().st_mtime_ns), default=None)


def run_version(checkpoint: Path, content: dict[str, Any], run_root: Path, requeued: bool = False) -> str | None:
    """The ``version_N`` folder of ``run_root`` the checkpoint belongs to: where it lies, or for Lightning's SLURM
    requeue checkpoint (``requeued``: an ``hpc_ckpt_<N>.ckpt`` that ``--ckpt_path hpc|auto`` found where Lightning
    writes it, the one checkpoint saved outside its run), where its checkpoint callbacks were writing. A checkpoint
    from elsewhere never chooses the run it is resumed into by what it records: it starts a new one."""
    folders = [checkpoint.parent]
    if requeued:
        callbacks = content.get("callbacks")
        states = callbacks.values() if isinstance(callbacks, dict) else []
        folders += [
            Path(state["dirpath"])
            for state in states
            if isinstance(state, dict) and isinstance(state.get("dirpath"), str)
        ]
    return next((v for folder in folders if (v := _version_of(folder / LAST_CHECKPOINT, run_root))), None)


def _readable_last(found: Path) -> tuple[Path, dict[str, Any]]:
    """``found`` read and checked; when it is unreadable (a crash while it was written by a tool without atomic
    saves, a full disk), the newest readable checkpoint beside it, with a warning naming the bad file."""
    try:
        return found, read_checkpoint(found)
    except UserInputError as error:
        bad = error
    others = sorted(found.parent.glob("*.ckpt"), key=lambda path: path.stat().st_mtime_ns, reverse=True)
    for candidate in (path for path in others if path != found):
        try:
            checkpoint = read_checkpoint(candidate)
        except UserInputError:
            continue
        warnings.warn(f"{bad} Resuming from the newest readable checkpoint instead: {candidate}", stacklevel=3)
        return candidate, checkpoint
    raise CheckpointNotFoundError(f"--ckpt_path last: {bad} No other readable checkpoint in {found.parent}.")


@dataclass
class Chosen:
    """The checkpoint ``--ckpt_path`` chose (read and checked), where it stands, the run folder a resumed run writes
    into (``version_N`` of ``run_root``, or ``None``: a new run), and what the choice passed over."""

    path: Path
    epoch: int
    global_step: int
    version: str | None
    notes: list[str] = field(default_factory=list)
    epochs_done: int = 0
    """Epochs whose training the checkpoint has finished (Lightning's ``epoch_progress``: an epoch saved at its end,
    or stopped at ``max_steps`` on its last batch, counts; one saved part-way does not)."""

    def summary(self) -> str:
        return f"{self.path} (epoch {self.epoch + 1}, step {self.global_step})"

    def refuse_nothing_to_train(self, max_epochs: int | None, max_steps: int) -> None:
        """Refuse to resume a fit that would train nothing: the checkpoint has reached ``max_epochs`` or
        ``max_steps`` already (Lightning would say ``max_epochs=2 reached``, test again and write a config)."""
        epochs, steps = self.epochs_done, self.global_step
        if max_epochs not in (None, -1) and max_epochs <= epochs:
            more = " too" if max_steps not in (None, -1) and max_steps > steps else ""
            raise UserInputError(
                f"--trainer.max_epochs={max_epochs} is reached already: {self.path} has trained {epochs} epoch(s) "
                f"(step {steps}), so this run would train nothing; raise --trainer.max_epochs{more} to at least "
                f"{epochs + 1} (or -1 to stop at --trainer.max_steps only)"
            )
        if max_steps not in (None, -1) and max_steps <= steps:
            raise UserInputError(
                f"--trainer.max_steps={max_steps} is reached already: {self.path} is at step {steps}, so this run "
                f"would train nothing; raise --trainer.max_steps above {steps} (or -1 to stop at max_epochs only)"
            )


def choose_checkpoint(
    requested: str, subcommand: str, run_root: Path, root_dir: Path
) -> tuple[Chosen, dict[str, Any]] | None:
    """What ``--ckpt_path`` means for ``subcommand``, and the checkpoint's content; ``None`` when ``auto`` finds
    nothing to resume.

    ``last``, ``best`` and ``auto`` look only in ``run_root`` (the runs of the recipe being run) and, for ``hpc`` and
    ``auto``, ``root_dir``. ``fit`` takes the newest run (which it then locks: :mod:`project.training.run_lock`); from
    ``best`` it resumes into a new run folder, so that the run's newer ``last.ckpt`` stays as it is. ``validate`` and
    ``test`` pass over runs still training, whose ``last.ckpt`` changes under them, and take the newest other one.
    """
    busy = _live_runs(run_root) if subcommand != "fit" and requested in ("last", "best", "auto") else {}
    if requested == "auto":
        found = _newest_to_resume(run_root, root_dir, skip=busy)
        if found is None and subcommand != "fit":
            raise CheckpointNotFoundError(f"--ckpt_path auto: no checkpoint under {run_root} or in {root_dir}")
    else:
        found = _resolve_checkpoint(requested, run_root, root_dir, skip=busy)
    if found is None:
        return None
    path, checkpoint = found
    notes = [f"--ckpt_path {requested}: passed over {folder}, which {who} trains into" for folder, who in busy.items()]
    requeued = requested in ("hpc", "auto") and path.parent.resolve() == root_dir.resolve()
    version = run_version(path, checkpoint, run_root, requeued and bool(_HPC_CHECKPOINT.fullmatch(path.name)))
    if subcommand == "fit" and requested == "best" and version is not None:
        notes.append(f"--ckpt_path best: an older state than {run_root / version}'s last.ckpt, resumed into a new run")
        version = None
    chosen = Chosen(path, checkpoint["epoch"], checkpoint["global_step"], version, notes, _epochs_done(checkpoint))
    return chosen, checkpoint


def _epochs_done(checkpoint: dict[str, Any]) -> int:
    """The epochs a checkpoint has finished training: ``processed`` of its fit loop's epoch progress (a plain count
    Lightning saves), or its epoch index where it has none."""
    loops = checkpoint.get("loops")
    progress = loops.get("fit_loop", {}).get("epoch_progress", {}) if isinstance(loops, dict) else {}
    processed = progress.get("current", {}).get("processed") if isinstance(progress, dict) else None
    return processed if isinstance(processed, int) and processed >= 0 else int(checkpoint["epoch"])


def next_free_name(folder: Path, stem: str, suffix: str) -> str:
    """``config.yaml`` if it is free in ``folder``, else the first free ``config-resume<k>.yaml``."""
    name, k = f"{stem}{suffix}", 0
    while (folder / name).exists():
        k += 1
        name = f"{stem}-resume{k}{suffix}"
    return name
