"""What a run and an evaluation draw: the figures (:mod:`project.reports.figures`), the TensorBoard logger and
reports (:mod:`project.reports.tensorboard`), the trackers beside it (:mod:`project.reports.trackers`) and the report
images sent to each (:mod:`project.reports.images`).

Each name below is imported from its module when first used, not with this package: ``evaluate`` draws its figures
without importing TensorBoard's writer or the trackers.
"""

import importlib
from typing import Any

_HOMES = {
    "RunCSVLogger": "trackers",
    "RunLogger": "tensorboard",
    "RunMLFlowLogger": "trackers",
    "TensorBoardReports": "tensorboard",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'project.reports' has no attribute {name!r}")
    return getattr(importlib.import_module(f"project.reports.{_HOMES[name]}"), name)
