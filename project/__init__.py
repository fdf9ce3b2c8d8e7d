"""A PyTorch Lightning template: train a CNN on MNIST from scratch, then fine-tune it."""

__version__ = "0.1.0"
