"""Focal loss (Lin et al., 2017, "Focal Loss for Dense Object Detection"): cross-entropy that weighs down the examples
the network already gets right, so that training dwells on the hard ones. A task of your own, outside ``project/``."""

import torch.nn.functional as F
from torch import Tensor

from project.errors import UserInputError
from project.tasks import Multiclass


class FocalLoss(Multiclass):
    """One class out of several, each example's cross-entropy times ``(1 - p) ** gamma``, ``p`` the probability the
    network gives its class.

    Args:
        gamma: how much the examples already right are weighed down (0: plain cross-entropy; 2 is usual).
        label_smoothing, class_weights, metrics: as :class:`~project.tasks.Multiclass`'s.
    """

    def __init__(self, gamma: float = 2.0, **options) -> None:
        super().__init__(**options)
        if not gamma >= 0:
            raise UserInputError(f"model.task.gamma must be 0 or more, got {gamma}")
        self.gamma = gamma

    def example_losses(self, outputs: Tensor, targets: Tensor) -> Tensor:
        shares = targets if targets.ndim == 2 else F.one_hot(targets, outputs.shape[1])  # (MixUp, CutMix: shares)
        true = (outputs.softmax(dim=1) * shares).sum(dim=1)
        return (1 - true) ** self.gamma * super().example_losses(outputs, targets)

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return self.example_losses(outputs, targets).mean()
