"""What a run and an evaluation draw: the figures (:mod:`project.reports.figures`), the TensorBoard logger and
reports (:mod:`project.reports.tensorboard`), the trackers beside it (:mod:`project.reports.trackers`) and the report
images sent to each (:mod:`project.reports.images`)."""

from project.reports.tensorboard import RunLogger, TensorBoardReports
from project.reports.trackers import RunCSVLogger, RunMLFlowLogger

__all__ = ["RunCSVLogger", "RunLogger", "RunMLFlowLogger", "TensorBoardReports"]
