"""Examples as a table of texts: the worst-classified texts of a validation (TensorBoard's text summary:
:class:`project.reports.tensorboard.TensorBoardReports`) and of an evaluation report
(:mod:`project.inference.evaluation`), kept as the batches go by (:class:`WorstExamples`) and written as a Markdown
table, each text decoded from its token ids with the data's tokenizer (:func:`text_rows`, :func:`markdown_table`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from torch.nn import functional

from project.tasks import Task

if TYPE_CHECKING:
    from project.data.tokenizer import TextTokenizer

_TEXT_WIDTH = 200
"""The most characters of a text a table shows (the rest: ``…``)."""


def _padded_together(first: Tensor, second: Tensor) -> Tensor:
    """Two batches one after the other; token ids ``(batch, length)`` of two lengths are padded with 0 (the pad id) to
    the longer first, other inputs (images, targets) are concatenated as they are."""
    if first.dim() == second.dim() == 2 and not first.is_floating_point() and first.shape[1] != second.shape[1]:
        length = max(first.shape[1], second.shape[1])
        first, second = (functional.pad(ids, (0, length - ids.shape[1]), value=0) for ids in (first, second))
    return torch.cat((first, second))


class WorstExamples:
    """The ``count`` examples of highest loss of the batches seen so far, each with its input, target and decision:
    a running top-k, on the batches' device (``None`` until a batch is seen)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.kept: tuple[Tensor, Tensor, Tensor, Tensor] | None = None
        """The losses, inputs, targets and decisions kept, the worst first."""

    def update(self, losses: Tensor, inputs: Tensor, targets: Tensor, decided: Tensor) -> None:
        """Take a batch's examples (their losses, inputs, targets and decisions) into the running top-k."""
        batch = (losses, inputs, targets, decided)
        if self.kept is not None:
            batch = tuple(_padded_together(kept, new) for kept, new in zip(self.kept, batch, strict=True))
        keep = batch[0].topk(min(self.count, len(batch[0]))).indices
        self.kept = tuple(tensor[keep] for tensor in batch)


def text_rows(
    tokenizer: TextTokenizer,
    ids: Tensor,
    targets: Tensor,
    decided: Tensor,
    task: Task,
    class_names: list[str],
    losses: Tensor | None = None,
) -> list[dict[str, Any]]:
    """Examples as plain rows: ``text`` (decoded from its ``ids``, padding left out), ``true`` and ``predicted`` (as
    the task describes them) and, given ``losses``, ``loss``."""
    rows = []
    for index, row in enumerate(ids.cpu()):
        rows.append({
            "text": tokenizer.decode(row[row != 0].tolist()),
            "true": task.describe(targets[index], class_names),
            "predicted": task.describe(decided[index], class_names),
            **({"loss": losses[index].item()} if losses is not None else {}),
        })  # fmt: skip
    return rows


def masked_rows(
    tokenizer: TextTokenizer, ids: Tensor, targets: Tensor, decided: Tensor, losses: Tensor | None = None
) -> list[dict[str, Any]]:
    """Masked-token examples (pretraining) as plain rows: ``text`` (its tokens, ``[MASK]`` shown), the ``true`` and
    the ``predicted`` tokens at the masked positions (targets other than -100), and given ``losses``, ``loss``."""
    rows = []
    for index, row in enumerate(ids.cpu()):
        real = row != 0
        masked = real & (targets[index].cpu() >= 0)
        true, predicted = targets[index].cpu()[masked].tolist(), decided[index].cpu()[masked].tolist()
        rows.append({
            "text": " ".join(tokenizer.tokenizer.id_to_token(token) or "?" for token in row[real].tolist()),
            "true": " ".join(tokenizer.tokenizer.id_to_token(token) or "?" for token in true),
            "predicted": " ".join(tokenizer.tokenizer.id_to_token(token) or "?" for token in predicted),
            **({"loss": losses[index].item()} if losses is not None else {}),
        })  # fmt: skip
    return rows


def _cell(value: Any, width: int = _TEXT_WIDTH) -> str:
    """``value`` as one Markdown table cell: on one line, its pipes escaped, at most ``width`` characters; a number
    with 4 digits."""
    if isinstance(value, float):
        return f"{value:.4f}"
    flat = " ".join(str(value).split())
    shown = flat if len(flat) <= width else flat[: width - 1] + "…"
    return shown.replace("\\", "\\\\").replace("|", "\\|")


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """``rows`` (of the same keys) as a Markdown table, one column per key; each text at most :data:`_TEXT_WIDTH`
    characters, on one line."""
    if not rows:
        return "(none)\n"
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(_cell(value) for value in row.values()) + " |" for row in rows]
    return "\n".join(lines) + "\n"
