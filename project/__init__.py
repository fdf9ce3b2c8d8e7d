"""A PyTorch Lightning template: train a CNN on MNIST from scratch, then fine-tune it."""

import os
import sys

# `python -m project` puts the current folder first on sys.path (Python sets sys.argv[0] to "-m" while it imports
# the package): take it off, so that a file such as tensorboard.py in a received run folder is never imported in place
# of a library, and tell the interpreters a run starts the same (PYTHONSAFEPATH; Python 3.11+). Why, and what this
# cannot prevent (a `project/` folder in the current one): docs/design_notes.md.
if sys.argv[:1] == ["-m"]:
    os.environ["PYTHONSAFEPATH"] = "1"
    if sys.path and os.path.realpath(sys.path[0] or ".") == os.path.realpath("."):
        del sys.path[0]

__version__ = "0.2.0"


def load(folder: str | os.PathLike, onnx: bool = False):  # -> project.inference.Predictor (imported when called)
    """A model folder (``python -m project export``'s) ready to predict, in one call, with no pickle read.

    Returns a :class:`project.inference.Predictor`: ``.predict(paths)`` takes image files through the preprocessing
    of training and returns a row per image (the predicted class and the probabilities) and the files skipped;
    ``.network`` is the PyTorch network (built from ``config.json``'s class, checked against the allow-list, with the
    weights of ``model.safetensors`` loaded strictly; in eval mode) for a normalised float32 batch;
    ``.preprocessing`` says the channels, size, mean, std and class names. ``onnx=True`` runs ``model.onnx`` through
    onnxruntime instead (then ``.network`` is ``None``). A text model's folder gives a
    :class:`project.inference.prediction.TextPredictor`: ``.predict(["a text", ...])``, ``.ids(texts)`` (the padded
    token ids the network takes), ``.tokenizer``::

        import project
        model = project.load("exported/mnist")
        rows, skipped = model.predict(["digit.png"])

    Importing ``project`` stays cheap: torch and the rest are imported by this call.
    """
    from pathlib import Path

    from project.errors import UserInputError
    from project.inference.prediction import Predictor

    path = Path(folder).expanduser()
    if not path.is_dir():
        raise UserInputError(f"{path}: not a folder (project.load takes the folder python -m project export writes)")
    return Predictor.from_folder(path, onnx=onnx)
