"""Using a trained model: whole-split evaluation reports (:mod:`project.inference.evaluation`), prediction of new
images (:mod:`project.inference.prediction`; the ``predict`` command and its CSV:
:mod:`project.inference.prediction_files`; an ONNX file run without torch: :mod:`project.inference.numpy_predictor`)
and exports (:mod:`project.inference.export`).

Each name below is imported from its module when first used, not with this package: ``predict`` from an ONNX file
imports :mod:`project.inference.prediction_files` without torch, Lightning or the training code that the other
modules load.
"""

import importlib
from typing import Any

_HOMES = {
    "Predictor": "prediction",
    "compute_report": "evaluation",
    "data_module_from_checkpoint": "evaluation",
    "export_checkpoint": "export",
    "predict": "evaluation",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'project.inference' has no attribute {name!r}")
    return getattr(importlib.import_module(f"project.inference.{_HOMES[name]}"), name)
