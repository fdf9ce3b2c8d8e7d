"""Where runs live on disk, and which checkpoint ``--ckpt_path`` means.

Each run writes into one TensorBoard version folder and keeps its checkpoints inside it::

    logs/<name>/version_<N>/
        events.out.tfevents.*      TensorBoard scalars (one file per process that wrote to the run)
        hparams.yaml
        checkpoints/
            epoch=<e>-step=<s>.ckpt  the best checkpoint so far (by the monitored validation metric)
            last.ckpt                the newest state: resume from it

Lightning alone resolves ``--ckpt_path last`` against the checkpoint folder of the *new* run it is starting (which
is empty) and logs a resumed run into a new version folder (Lightning issues #5403, #2735). The command line uses
these functions instead, so that a resumed run finds the newest ``last.ckpt`` and continues in its own folder.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

from project.checkpointing import read_checkpoint
from project.errors import CheckpointNotFoundError, UserInputError

LAST_CHECKPOINT = "last.ckpt"
_VERSION_FOLDER = re.compile(r"version_\d+")


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


def resolve_checkpoint(ckpt_path: str, run_root: Path) -> tuple[Path, dict[str, Any]]:
    """The checkpoint that ``--ckpt_path`` names, read and checked: ``last`` is the newest ``last.ckpt`` under
    ``run_root``; when that file is unreadable (a crash while it was written by a tool without atomic saves, a full
    disk), the newest readable checkpoint beside it is used instead, with a warning naming the bad file."""
    if ckpt_path != "last":
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
            f"--ckpt_path last: no {LAST_CHECKPOINT} under {run_root}/version_*/checkpoints/, so there is no "
            f"run to resume. Start a new run without --ckpt_path, or pass the path of a checkpoint file."
        )
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
        warnings.warn(f"{bad} Resuming from the newest readable checkpoint instead: {candidate}", stacklevel=2)
        return candidate, checkpoint
    raise CheckpointNotFoundError(f"--ckpt_path last: {bad} No other readable checkpoint in {found.parent}.")
