#!/usr/bin/env python
"""Export a checkpoint's network: ONNX, a torch.export program (.pt2) and safetensors weights, with model.json.

    python scripts/export.py logs/mnist/version_0/checkpoints/last.ckpt
    python scripts/export.py CKPT --out exported/mnist --formats onnx safetensors

The files go to ``<run folder>/export/<checkpoint name>/`` unless ``--out`` says (a folder that must not exist yet).
Each takes a batch of any size of normalised images and returns the raw outputs; ``model.json`` says the
preprocessing, the class names and what the outputs mean. ``model.safetensors`` is what
``--model.finetuning.pretrained`` takes to fine-tune from. The exports are checked against the checkpoint's network
(the largest difference, relative to the outputs' scale, at most 1e-5).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from project.errors import ReportedError
from project.inference.export import FORMATS, export_checkpoint
from project.trusted import add_trust_option, trust


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--out", type=Path, help="a new folder for the files")
    parser.add_argument("--formats", nargs="+", default=list(FORMATS), help=f"any of {', '.join(FORMATS)}")
    add_trust_option(parser)
    args = parser.parse_args()
    out = args.out or args.checkpoint.resolve().parent.parent / "export" / args.checkpoint.stem
    try:
        trust(*args.trust)
        about = export_checkpoint(args.checkpoint, out, tuple(args.formats))
    except ReportedError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(error.exit_code) from None
    differences = ", ".join(
        f"{name} {value:.1e}" for name, value in about["largest_difference_from_the_checkpoint"].items()
    )
    print(f"wrote {', '.join(about['files'])} and model.json to {out}")
    if differences:
        print(f"largest difference from the checkpoint's network (relative to the outputs' scale): {differences}")


if __name__ == "__main__":
    main()
