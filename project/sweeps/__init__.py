"""Hyperparameter sweeps with Optuna: ``python -m project sweep SPEC`` (:mod:`project.sweeps.command`).

A spec (:mod:`project.sweeps.spec`) says what every trial trains and what it searches; each trial is a normal
``fit`` run in the sweep's folder, reported to Optuna and pruned by a callback of its own
(:mod:`project.sweeps.trial`); workers on one machine or many share the study through its storage, survive being
killed and retry what was interrupted (:mod:`project.sweeps.study`); the results are rewritten after every trial
(:mod:`project.sweeps.results`). See docs/sweeps.md.

K-fold cross-validation (``python -m project crossval``, :mod:`project.sweeps.crossval`) runs on the same machinery:
a study whose trials are the folds, and the mean and spread of their metrics. See docs/crossval.md.
"""

from project.sweeps.command import main, run_sweep
from project.sweeps.spec import SweepSpec, load_spec

__all__ = ["SweepSpec", "load_spec", "main", "run_sweep"]
