"""Masked-language modelling, BERT's pretraining: predict the tokens hidden in a text from the rest of it.

The network gives one logit per token id at every position (batch, length, vocabulary); the targets are the original
ids at the masked positions and -100 elsewhere (``project.data.text_corpus`` masks BERT's way). The loss is the
cross-entropy of the masked positions; the metrics are the masked tokens' accuracy and the perplexity (the
exponential of their mean loss), both computed over the masked positions alone.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric

from project.errors import UserInputError
from project.tasks.base import Task

IGNORED = -100
"""The target of a position that is not masked: left out of the loss and the metrics (cross-entropy's default)."""


class MaskedTokens(Task):
    """Masked-language modelling: cross-entropy of the masked tokens; their accuracy and the perplexity.

    Args:
        metrics: extra metrics (:class:`~project.tasks.base.Task`), updated with the logits (batch, length, vocabulary)
            and the targets (batch, length).
    """

    name = "masked_tokens"
    monitor = ("val/perplexity", "min")
    summary = ("perplexity", "acc")
    outputs_meaning = "logits per position, one per token id: softmax for each position's token probabilities"

    @classmethod
    def outputs_for(cls, num_classes: int) -> int:
        return num_classes

    @classmethod
    def outputs_rule(cls) -> str:
        return "one output per token id of the tokenizer"

    def example_targets(self) -> Tensor:
        targets = torch.full((2, 3), IGNORED)
        targets[0, 1], targets[1, 0] = 0, self.num_outputs - 1
        return targets

    def example_batch(self) -> tuple[Tensor, Tensor]:
        targets = self.example_targets()
        outputs = torch.arange(targets.numel() * self.num_outputs, dtype=torch.float32).sin()
        return outputs.view(*targets.shape, self.num_outputs), targets

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """The mean cross-entropy of the batch's masked tokens (0 for a batch with none, rather than NaN)."""
        losses = F.cross_entropy(outputs.flatten(0, 1), targets.flatten(), ignore_index=IGNORED, reduction="none")
        return losses.sum() / (targets != IGNORED).sum().clamp(min=1)

    def example_losses(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """Each text's mean cross-entropy over its masked tokens (0 where none is masked)."""
        losses = F.cross_entropy(outputs.transpose(1, 2), targets, ignore_index=IGNORED, reduction="none")
        return losses.sum(dim=1) / (targets != IGNORED).sum(dim=1).clamp(min=1)

    def scores(self, outputs: Tensor) -> Tensor:
        return outputs

    def decisions(self, outputs: Tensor) -> Tensor:
        return outputs.argmax(dim=-1)

    def own_metrics(self) -> dict[str, Metric]:
        return {"acc": _MaskedAccuracy(), "perplexity": _Perplexity()}

    def describe(self, value: Tensor, class_names: list[str]) -> str:
        return " ".join(class_names[int(token)] for token in value.flatten())

    def report(self, scores: Tensor, targets: Tensor, class_names: list[str]) -> dict[str, Any]:
        accuracy, perplexity = _MaskedAccuracy(), _Perplexity()
        accuracy.update(scores, targets)
        perplexity.update(scores, targets)
        masked = int((targets != IGNORED).sum())
        return {
            "overall": {
                "perplexity": perplexity.compute().item(),
                "accuracy": accuracy.compute().item(),
                "masked_tokens": masked,
            }
        }

    def prediction_rows(self, outputs: Tensor, class_names: list[str]) -> list[dict[str, Any]]:
        raise UserInputError(
            "a masked-language model predicts hidden tokens, not a label per text: fine-tune it on labelled texts "
            "(--model.finetuning.pretrained) and predict with that model"
        )


def _masked(scores: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """The logits (masked, vocabulary) and targets (masked,) of the masked positions."""
    chosen = targets != IGNORED
    return scores[chosen], targets[chosen]


class _MaskedAccuracy(Metric):
    """The share of masked tokens whose most likely id is the hidden one."""

    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("correct", torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0), dist_reduce_fx="sum")

    def update(self, scores: Tensor, targets: Tensor) -> None:
        logits, hidden = _masked(scores, targets)
        self.correct += (logits.argmax(dim=-1) == hidden).sum()
        self.total += hidden.numel()

    def compute(self) -> Tensor:
        return self.correct.float() / self.total.clamp(min=1)


class _Perplexity(Metric):
    """The exponential of the masked tokens' mean cross-entropy: how many ids the network hesitates between."""

    full_state_update = False
    higher_is_better = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("loss", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0), dist_reduce_fx="sum")

    def update(self, scores: Tensor, targets: Tensor) -> None:
        logits, hidden = _masked(scores, targets)
        self.loss += F.cross_entropy(logits.float(), hidden, reduction="sum").double()
        self.total += hidden.numel()

    def compute(self) -> Tensor:
        return (self.loss / self.total.clamp(min=1)).exp().float()
