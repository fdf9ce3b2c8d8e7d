"""A PyTorch Lightning template: train a CNN on MNIST from scratch, then fine-tune it."""

from project import moved

moved.install()  # old module names (before the package had folders) keep working in checkpoints and configs

__version__ = "0.1.0"
