"""Training: the LightningModule and the callbacks of a run.

- :mod:`project.training.task_module`: :class:`TaskModule`, the LightningModule (steps, logging, checkpoint hooks);
- :mod:`project.training.finetuning`: pretrained backbones, parameter groups, the freeze and learning-rate plans;
- :mod:`project.training.schedules`, :mod:`project.training.lr_factor`, :mod:`project.training.torch_schedulers`: the
  learning-rate plan and its checks, its factor at each optimizer step, and a torch scheduler's checks and resume;
- :mod:`project.training.checkpoints`: checkpoints written atomically and read as data, the allow-list;
- :mod:`project.training.resume`: exact resume (:class:`ExactResume`) and what a resumed run may change;
- :mod:`project.training.runs`, :mod:`project.training.run_lock`: where runs live, which checkpoint a name means,
  the lock on a run in use;
- :mod:`project.training.progress`, :mod:`project.training.divergence`, :mod:`project.training.specs`: what a run
  prints, the non-finite-loss check, objects as plain values in checkpoints;
- :mod:`project.training.stopping`: early stopping on the task's own metric (:class:`TaskEarlyStopping`);
- :mod:`project.training.averaging`: averaged weights, EMA (:class:`EMAWeights`) and SWA (:class:`SWAWeights`).
"""

from project.training.averaging import EMAWeights, SWAWeights
from project.training.checkpoints import BestCheckpoint, LastCheckpoint
from project.training.progress import ProgressLog, RunProgressBar
from project.training.resume import ExactResume
from project.training.stopping import TaskEarlyStopping
from project.training.task_module import TaskModule

__all__ = [
    "BestCheckpoint",
    "EMAWeights",
    "ExactResume",
    "LastCheckpoint",
    "ProgressLog",
    "RunProgressBar",
    "SWAWeights",
    "TaskEarlyStopping",
    "TaskModule",
]
