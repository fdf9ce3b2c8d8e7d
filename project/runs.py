"""Where runs live on disk, and which checkpoint ``--ckpt_path`` means.

Each run writes into one TensorBoard version folder and keeps its checkpoints inside it::

    logs/<name>/version_<N>/
        events.out.tfevents.*      TensorBoard scalars (one file per process that wrote to the run)
        hparams.yaml
        checkpoints/
            epoch=<e>-step=<s>.ckpt  the best checkpoint so far (by the monitored validation metric)
            last.ckpt                the newest state: resume from it

Lightning alone resolves ``--ckpt_path last`` against the checkpoint folder of the *new* run it is starting (which
is empty) and logs a resumed run into a new version folder (Lightning issues #5403, #2735); it also reads the files
that ``best`` and ``hpc`` name without this project's checks. :func:`resolve_checkpoint` gives every name one
meaning here, and every file it returns has been read with :func:`~project.checkpoints.read_checkpoint`.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

from project.checkpoints import LAST_CHECKPOINT, read_checkpoint
from project.errors import CheckpointNotFoundError, UserInputError

_VERSION_FOLDER = re.compile(r"version_\d+")
_HPC_CHECKPOINT = re.compile(r"hpc_ckpt_(\d+)\.ckpt")
CKPT_PATH_NAMES = ("last", "best", "hpc", "auto")
"""The names ``--ckpt_path`` takes besides a file path."""


def find_last_checkpoint(run_root: Path) -> Path | None:
    """The most recently written ``version_*/checkpoints/last.ckpt`` under ``run_root``, or ``None``."""
    candidates = [path for path in run_root.glob(f"version_*/checkpoints/{LAST_CHECKPOINT}") if path.is_file()]
    return max(candidates, key=lambda path: path.stat().st_mtime_ns, default=None)


def version_of(checkpoint: Path, run_root: Path) -> str | None:
    """``version_N`` if ``checkpoint`` lies in ``run_root/version_N/checkpoints/``, else ``None``."""
    folder = checkpoint.resolve().parent
    if folder.name != "checkpoints" or folder.parent.parent != run_root.resolve():
        return None
    version = folder.parent.name
    return version if _VERSION_FOLDER.fullmatch(version) else None


def find_hpc_checkpoint(root: Path) -> Path | None:
    """The ``hpc_ckpt_<N>.ckpt`` with the highest N in ``root`` (where Lightning's SLURM requeue writes them)."""
    numbered = {}
    for path in root.glob("hpc_ckpt_*.ckpt"):
        if match := _HPC_CHECKPOINT.fullmatch(path.name):
            numbered[int(match.group(1))] = path
    return numbered[max(numbered)] if numbered else None


def best_checkpoint_of(last: Path, last_content: dict[str, Any]) -> Path | None:
    """The best checkpoint recorded in ``last``'s ModelCheckpoint state, looked up beside ``last``."""
    for state in last_content.get("callbacks", {}).values():
        best = state.get("best_model_path") if isinstance(state, dict) else None
        if isinstance(best, str) and best and (last.parent / Path(best).name).is_file():
            return last.parent / Path(best).name
    return None


def resolve_checkpoint(ckpt_path: str, run_root: Path, root_dir: Path = Path(".")) -> tuple[Path, dict[str, Any]]:
    """The checkpoint that ``--ckpt_path`` names, read and checked.

    - ``last``: the newest ``last.ckpt`` under ``run_root`` (or, when it is unreadable, the newest readable
      checkpoint beside it: :func:`readable_last`);
    - ``best``: the best checkpoint of that same run (as its ``last.ckpt`` records it);
    - ``hpc``: the newest ``hpc_ckpt_<N>.ckpt`` in ``root_dir`` (Lightning's SLURM requeue);
    - ``auto`` is :func:`newest_to_resume`, which may find nothing;
    - anything else: a file path. Lightning's model registry is refused: it downloads files, unchecked.
    """
    if ckpt_path == "registry" or ckpt_path.startswith("registry:"):
        raise UserInputError(
            f"--ckpt_path {ckpt_path}: Lightning's model registry is not supported here (it downloads a checkpoint "
            f"and skips this project's checks); download the file yourself and pass the path of a checkpoint file"
        )
    if ckpt_path == "hpc":
        found = find_hpc_checkpoint(root_dir)
        if found is None:
            raise CheckpointNotFoundError(f"--ckpt_path hpc: no hpc_ckpt_<N>.ckpt in {root_dir.resolve()}")
        return found, read_checkpoint(found)
    if ckpt_path not in ("last", "best"):
        path = Path(ckpt_path).expanduser()
        if not path.is_file():
            raise CheckpointNotFoundError(
                f"--ckpt_path {ckpt_path}: no such checkpoint file. Pass 'last' to resume the newest run under "
                f"{run_root}, or the path of a .ckpt file."
            )
        return path, read_checkpoint(path)
    found = find_last_checkpoint(run_root)
    if found is None:
        raise CheckpointNotFoundError(
            f"--ckpt_path {ckpt_path}: no {LAST_CHECKPOINT} under {run_root}/version_*/checkpoints/, so there is no "
            f"run to resume. Start a new run without --ckpt_path, or pass the path of a checkpoint file."
        )
    if ckpt_path == "best":
        best = best_checkpoint_of(found, read_checkpoint(found))
        if best is None:
            raise CheckpointNotFoundError(f"--ckpt_path best: {found} records no best checkpoint beside it")
        return best, read_checkpoint(best)
    return readable_last(found)


def newest_to_resume(run_root: Path, root_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """``--ckpt_path auto``: the run's ``last.ckpt`` or the newest ``hpc_ckpt_<N>.ckpt`` (Lightning's SLURM requeue),
    whichever holds more optimizer steps; ``None`` when there is neither (a job's first start: train from scratch)."""
    found = []
    if find_last_checkpoint(run_root) is not None:
        found.append(resolve_checkpoint("last", run_root, root_dir))
    hpc = find_hpc_checkpoint(root_dir)
    if hpc is not None:
        found.append((hpc, read_checkpoint(hpc)))
    return max(found, key=lambda item: (item[1]["global_step"], item[0].stat().st_mtime_ns), default=None)


def run_version(checkpoint: Path, content: dict[str, Any], run_root: Path) -> str | None:
    """The ``version_N`` folder of ``run_root`` the checkpoint belongs to: where it lies, or for a checkpoint saved
    elsewhere (``hpc_ckpt_<N>.ckpt``), where its checkpoint callbacks were writing."""
    folders = [checkpoint.parent] + [
        Path(state["dirpath"])
        for state in content.get("callbacks", {}).values()
        if isinstance(state, dict) and isinstance(state.get("dirpath"), str)
    ]
    return next((v for folder in folders if (v := version_of(folder / LAST_CHECKPOINT, run_root))), None)


def readable_last(found: Path) -> tuple[Path, dict[str, Any]]:
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
