"""Checkpoints that are never lost: atomic writes, and reading only what is plainly a checkpoint.

Lightning writes a checkpoint by truncating the file and writing into it: a crash or a full disk part-way leaves a
broken file where the previous good one was. :class:`AtomicCheckpointIO` writes to a temporary file in the same
folder, flushes it to disk and renames it over the old one, which a POSIX filesystem does atomically: the path
holds either the old checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO

from project.errors import UserInputError, first_line


class AtomicCheckpointIO(TorchCheckpointIO):
    """Saves with write-to-temporary, fsync, rename; a failed save leaves the previous file and no temporary."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(descriptor, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        _fsync_folder(path.parent)  # make the rename itself durable


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A Lightning checkpoint read with ``weights_only=True``; :class:`UserInputError` naming the file otherwise.

    Refuses files that are truncated or corrupt, that are not checkpoints, and that carry pickled objects (which
    ``weights_only=True`` will not unpickle: they could run code).
    """
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise UserInputError(
            f"{path} is not a readable checkpoint (truncated, corrupt, not a checkpoint, or it holds pickled objects "
            f"that torch.load(weights_only=True) refuses): {first_line(error)}"
        ) from None
    if not isinstance(checkpoint, dict) or not {"state_dict", "epoch", "global_step"} <= checkpoint.keys():
        raise UserInputError(f"{path} is not a Lightning checkpoint (no state_dict, epoch and global_step)")
    return checkpoint
