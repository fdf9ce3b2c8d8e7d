"""What a run and an evaluation draw: the figures (:mod:`project.reports.figures`) and the TensorBoard logger and
reports (:mod:`project.reports.tensorboard`)."""

from project.reports.tensorboard import RunLogger, TensorBoardReports

__all__ = ["RunLogger", "TensorBoardReports"]
