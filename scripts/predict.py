#!/usr/bin/env python
"""``python -m project predict`` (every option: ``--help``): new images through a checkpoint or an ONNX export.

python scripts/predict.py logs/mnist/version_0/checkpoints/last.ckpt my_digits/ --out predictions.csv
python scripts/predict.py exported/mnist/model.onnx "scans/**/*.png" photo.jpg
"""

from project.__main__ import script

script("predict")
