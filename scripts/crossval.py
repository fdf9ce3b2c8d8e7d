#!/usr/bin/env python
"""``python -m project crossval`` (every option: ``--help``; docs/crossval.md): K-fold cross-validation, each fold a
fit run, and the mean and spread of every metric.

python scripts/crossval.py --folds 5 --config mnist --data.data_dir ../shared/data
"""

from project.__main__ import script

script("crossval")
