"""One report image to every logger of the run that takes images, through each logger's public API.

TensorBoard gets it as an image summary, MLflow as an image artifact of the run (``MlflowClient.log_image``, shown
under the run's Artifacts and, by step, in its Images tab), Weights & Biases as a ``wandb.Image`` (``log_image``).
Loggers that take no images (CSV) and loggers this module does not know are passed over: their run still gets every
metric and hyper-parameter from Lightning.
"""

from __future__ import annotations

import numpy as np
from lightning.pytorch.loggers import Logger, MLFlowLogger, TensorBoardLogger, WandbLogger


def takes_images(logger: Logger) -> bool:
    """Whether :func:`write_image` writes to ``logger``."""
    return isinstance(logger, TensorBoardLogger | MLFlowLogger | WandbLogger)


def write_image(logger: Logger, tag: str, picture: np.ndarray, step: int) -> None:
    """Write ``picture`` (height x width x 3, uint8) as ``tag`` at ``step`` to ``logger``, if it takes images."""
    if isinstance(logger, TensorBoardLogger):
        logger.experiment.add_image(tag, picture, step, dataformats="HWC")
    elif isinstance(logger, MLFlowLogger):
        logger.experiment.log_image(logger.run_id, picture, key=tag, step=step)
    elif isinstance(logger, WandbLogger):
        logger.log_image(key=tag, images=[picture], step=step)
