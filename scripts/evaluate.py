#!/usr/bin/env python
"""``python -m project evaluate`` (every option: ``--help``): a checkpoint's report on a split of its data.

python scripts/evaluate.py logs/mnist/version_0/checkpoints/last.ckpt
python scripts/evaluate.py CKPT --split val --data.data_dir ../shared/data
"""

from project.__main__ import script

script("evaluate")
