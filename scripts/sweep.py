#!/usr/bin/env python
"""``python -m project sweep`` (every option: ``--help``; docs/sweeps.md): search hyperparameters with Optuna.

python scripts/sweep.py mnist                                  # project/configs/sweeps/mnist.yaml
python scripts/sweep.py my_sweep.yaml --data.data_dir ../shared/data --trials 40 --workers 2
"""

from project.__main__ import script

script("sweep")
