"""Using a trained model: whole-split evaluation reports (:mod:`project.inference.evaluation`), prediction of new
images (:mod:`project.inference.prediction`) and exports (:mod:`project.inference.export`)."""

from project.inference.evaluation import compute_report, data_module_from_checkpoint, predict
from project.inference.export import export_checkpoint
from project.inference.prediction import Predictor

__all__ = ["Predictor", "compute_report", "data_module_from_checkpoint", "export_checkpoint", "predict"]
