#!/usr/bin/env python
"""A real text corpus nobody here wrote, built offline from what this machine holds: the docstrings of installed
Python packages, each labelled by the package it comes from (the task: tell from a docstring's prose which library
it documents).

    python scripts/text_corpus.py --out corpus/docstrings
    python scripts/text_corpus.py --out corpus/docstrings --packages numpy scipy torch --test-per-class 100

The packages' source files are read and parsed with :mod:`ast`, never imported (nothing of theirs runs). Each
module's, class's and function's docstring is cleaned:

- dedented (:func:`inspect.cleandoc`) and cut to its prose: what comes before its first section (a NumPy-style
  ``Parameters`` / ``----------`` header, a Google-style ``Args:`` / ``Returns:`` / ``Examples:`` line, a reST
  ``:param`` field or ``..`` directive, a ``>>>`` doctest line), its whitespace collapsed to single spaces;
- dropped when shorter than ``--min-words`` words (10), when it repeats a docstring of the same package (one kept),
  or when it appears in more than one package (no label would be right);
- the names of the chosen packages and their usual aliases (``numpy``/``np``, ``pandas``/``pd``,
  ``matplotlib``/``plt``, ...) replaced by the word ``PKG`` (``--keep-names``: left as they are): a docstring that
  names its own library would make the task a keyword search; ``corpus.json`` says how often that happened.

Test and training texts come from different source files: per package, seeded files are held out until they give
``--test-per-class`` test docstrings (at most a tenth of them from one file; the rest of those files' docstrings is
discarded, so that no near-copy of a test text trains), and the other files give the training pool (at most
``--max-per-package``, a seeded sample). Folders of tests and vendored code (``tests``, ``testing``, ``_vendor``,
``externals``, ...) are skipped. Written into ``--out`` (a new or empty folder; written whole or not at all):

- ``unlabelled/<package>.txt``: the training pool's texts, one per paragraph: the pretraining corpus (no test text);
- ``train.csv`` (the training pool, labelled) and ``test.csv`` (``text,label``; rows in a seeded order);
- ``corpus.json``: the packages, their versions, the counts at each step, the sizes, the seed and the options.

The same packages, versions and options give the same files, byte for byte.
"""

from __future__ import annotations

import argparse
import ast
import csv
import hashlib
import json
import os
import platform
import random
import re
import shutil
import sys
import sysconfig
import tempfile
import warnings
from collections import Counter
from dataclasses import dataclass, field
from importlib.metadata import distributions
from pathlib import Path

PACKAGES = ("matplotlib", "networkx", "pandas", "scipy", "sklearn", "sqlalchemy", "sympy", "torch")
"""The default choice: eight libraries of different fields, each with thousands of docstrings in this venv."""
ALIASES = {
    "matplotlib": ("mpl", "plt", "pyplot"),
    "networkx": ("nx",),
    "numpy": ("np",),
    "pandas": ("pd",),
    "scipy": ("sp",),
    "sklearn": ("scikit-learn", "scikit", "scikit_learn"),
    "torch": ("pytorch",),
    "transformers": ("huggingface",),
}
"""The names a package's docstrings call it by, besides its own (hidden as ``PKG`` unless ``--keep-names``)."""
HIDDEN = "PKG"
SKIPPED_FOLDERS = frozenset({
    "tests", "test", "testing", "_vendor", "vendor", "vendored", "externals", "_externals", "third_party",
    "_thirdparty", "benchmarks", "__pycache__",
})  # fmt: skip
_SECTION = re.compile(
    r"^\s*(args|arguments|parameters|params|returns?|yields?|raises|examples?|example usage|usage|notes?|"
    r"attributes|see also|references|warnings?|keyword arguments|kwargs|other parameters|methods|todo)\s*:\s*$",
    re.IGNORECASE,
)
_UNDERLINE = re.compile(r"^\s*(-{3,}|={3,}|~{3,})\s*$")
_FIELD_OR_DIRECTIVE = re.compile(r"^\s*(:\w[^:]*:|\.\. |>>>)")


def prose(docstring: str) -> str:
    """The prose of a (dedented) docstring: its lines before the first section header, field list, directive or
    doctest, with runs of whitespace made one space."""
    lines = docstring.splitlines()
    kept = []
    for i, line in enumerate(lines):
        underlined = i + 1 < len(lines) and _UNDERLINE.match(lines[i + 1]) and line.strip()
        if underlined or _SECTION.match(line) or _FIELD_OR_DIRECTIVE.match(line) or _UNDERLINE.match(line):
            break
        kept.append(line)
    return " ".join(" ".join(kept).split())


def names_pattern(packages: list[str]) -> re.Pattern:
    """A pattern matching the packages' names and aliases as whole words (``torch.nn`` names torch, ``torchvision``
    does not)."""
    names = sorted({n for p in packages for n in (p, *ALIASES.get(p, ()))}, key=lambda n: (-len(n), n))
    return re.compile(r"(?<![\w-])(" + "|".join(re.escape(n) for n in names) + r")(?![\w-])", re.IGNORECASE)


def names_of(package: str) -> set[str]:
    return {package.lower(), *(alias.lower() for alias in ALIASES.get(package, ()))}


def docstrings(source: str) -> list[str]:
    """The docstrings of a module's source, in the order of the nodes (module, classes, functions), dedented."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)  # invalid escape sequences in old sources
        tree = ast.parse(source)
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    found = [ast.get_docstring(node, clean=True) for node in ast.walk(tree) if isinstance(node, kinds)]
    return [text for text in found if text]


def source_files(root: Path) -> list[Path]:
    """The package's ``.py`` files in sorted order, outside folders of tests and vendored code."""
    files = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if d not in SKIPPED_FOLDERS)
        files += [Path(folder) / name for name in sorted(names) if name.endswith(".py")]
    return sorted(files, key=lambda path: path.relative_to(root).parts)


def version_of(package: str, site: Path) -> str:
    """The version of the distribution installing ``package`` into ``site`` (from its metadata, not by importing)."""
    for dist in sorted(distributions(path=[str(site)]), key=lambda d: d.metadata["Name"] or ""):
        tops = (dist.read_text("top_level.txt") or "").split()
        if not tops:
            tops = sorted({Path(str(f)).parts[0] for f in dist.files or [] if Path(str(f)).parts})
        if package in tops:
            return dist.version
    return "unknown"


@dataclass
class Package:
    """One package's docstrings, by source file (relative path -> cleaned texts), and its counts."""

    name: str
    version: str
    by_file: dict[str, list[str]] = field(default_factory=dict)
    counts: Counter = field(default_factory=Counter)


def collect(site: Path, package: str, min_words: int, hide: re.Pattern | None, own: re.Pattern) -> Package:
    root = site / package
    found = Package(package, version_of(package, site))
    seen: set[str] = set()
    for path in source_files(root):
        try:
            texts = docstrings(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            found.counts["files_unreadable"] += 1
            continue
        found.counts["files"] += 1
        found.counts["docstrings"] += len(texts)
        kept = []
        for text in texts:
            text = prose(text)
            if len(text.split()) < min_words:
                found.counts["dropped_short"] += 1
                continue
            if own.search(text):
                found.counts["naming_own_package"] += 1
            if hide is not None:
                text = hide.sub(HIDDEN, text)
            if text in seen:
                found.counts["dropped_repeated"] += 1
                continue
            seen.add(text)
            kept.append(text)
        if kept:
            found.by_file[path.relative_to(root).as_posix()] = kept
    return found


def drop_shared(packages: list[Package]) -> None:
    """Drop every text found in more than one package (its label is ambiguous)."""
    owners = Counter(text for p in packages for text in {t for texts in p.by_file.values() for t in texts})
    for p in packages:
        for name, texts in list(p.by_file.items()):
            kept = [t for t in texts if owners[t] == 1]
            p.counts["dropped_shared"] += len(texts) - len(kept)
            if kept:
                p.by_file[name] = kept
            else:
                del p.by_file[name]


def split(p: Package, test_per_class: int, max_per_package: int, seed: int) -> tuple[list[str], list[str]]:
    """(test, train) texts of one package: test texts from seeded held-out files (at most a tenth of them from one
    file; the rest of those files is discarded), training texts from the others (a seeded sample of at most
    ``max_per_package``)."""
    rng = random.Random(f"{seed}/{p.name}")
    files = sorted(p.by_file)
    rng.shuffle(files)
    per_file = max(1, test_per_class // 10)
    test: list[str] = []
    held_out = 0
    while files and len(test) < test_per_class:
        texts = p.by_file[files.pop(0)]
        held_out += len(texts)
        test += rng.sample(texts, min(per_file, len(texts), test_per_class - len(test)))
    train = [t for name in sorted(files) for t in p.by_file[name]]
    if len(train) > max_per_package:
        train = rng.sample(train, max_per_package)
    p.counts["discarded_beside_test"] = held_out - len(test)
    p.counts["not_sampled"] = sum(len(p.by_file[name]) for name in files) - len(train)
    return test, train


def build(args: argparse.Namespace, site: Path, staging: Path) -> dict:
    """Write the corpus into ``staging``; returns what ``corpus.json`` says."""
    hide = None if args.keep_names else names_pattern(args.packages)
    packages = []
    for name in args.packages:
        own = names_pattern([name])
        packages.append(collect(site, name, args.min_words, hide, own))
        print(f"{name}: {packages[-1].counts['docstrings']} docstrings in {packages[-1].counts['files']} files",
              flush=True)  # fmt: skip
    drop_shared(packages)
    (staging / "unlabelled").mkdir()
    rows: dict[str, list[tuple[str, str]]] = {"train": [], "test": []}
    report = {}
    for p in packages:
        test, train = split(p, args.test_per_class, args.max_per_package, args.seed)
        if len(test) < args.test_per_class or len(train) < args.min_train:
            raise SystemExit(
                f"error: {p.name} gives {len(test)} test and {len(train)} training docstrings after cleaning; "
                f"it needs {args.test_per_class} and {args.min_train} (--test-per-class, --min-train): choose another"
            )
        text = "\n\n".join(train) + "\n"
        (staging / "unlabelled" / f"{p.name}.txt").write_text(text, encoding="utf-8")
        rows["test"] += [(t, p.name) for t in test]
        rows["train"] += [(t, p.name) for t in train]
        long_enough = p.counts["docstrings"] - p.counts["dropped_short"]
        report[p.name] = {
            "version": p.version,
            **dict(sorted(p.counts.items())),
            "test": len(test),
            "train": len(train),
            "train_words": sum(len(t.split()) for t in train),
            "unlabelled_bytes": len(text.encode("utf-8")),
            "share_naming_own_package": round(p.counts["naming_own_package"] / max(1, long_enough), 4),
        }
    for part, part_rows in rows.items():
        random.Random(f"{args.seed}/{part}").shuffle(part_rows)
        with (staging / f"{part}.csv").open("w", newline="", encoding="utf-8") as file:
            writer = csv.writer(file, lineterminator="\n")
            writer.writerow(["text", "label"])
            writer.writerows(part_rows)
    digest = hashlib.sha256()
    for path in sorted(staging.rglob("*.*")):
        digest.update(path.relative_to(staging).as_posix().encode() + b"\0" + path.read_bytes())
    return {
        "source": "docstrings of installed Python packages, labelled by package (scripts/text_corpus.py)",
        "python": platform.python_version(),
        "packages": report,
        "classes": len(packages),
        "train": len(rows["train"]),
        "test": len(rows["test"]),
        "options": {
            "seed": args.seed,
            "test_per_class": args.test_per_class,
            "max_per_package": args.max_per_package,
            "min_words": args.min_words,
            "hidden_names": None if hide is None else HIDDEN,
        },
        "sha256_of_files": digest.hexdigest(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="a new (or empty) folder for the corpus")
    parser.add_argument("--packages", nargs="+", default=list(PACKAGES), help="top-level package names")
    parser.add_argument("--site-packages", help="where they are installed (default: this interpreter's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test-per-class", type=int, default=150, help="held-out test docstrings per package")
    parser.add_argument("--max-per-package", type=int, default=3000, help="training docstrings per package, at most")
    parser.add_argument("--min-train", type=int, default=250, help="refuse a package with fewer training docstrings")
    parser.add_argument("--min-words", type=int, default=10, help="shorter docstrings (in words) are dropped")
    parser.add_argument("--keep-names", action="store_true", help="leave the packages' names in the texts")
    args = parser.parse_args(argv)
    site = Path(args.site_packages or sysconfig.get_paths()["purelib"])
    for option in ("test_per_class", "max_per_package", "min_words"):
        if getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')} must be a positive integer, got {getattr(args, option)}")
    if len(set(args.packages)) != len(args.packages) or len(args.packages) < 2:
        parser.error(f"--packages must name at least two different packages, got {' '.join(args.packages)}")
    missing = [p for p in args.packages if not (site / p / "__init__.py").is_file()]
    if missing:
        parser.error(f"not installed as packages in {site}: {', '.join(missing)}")
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        parser.error(f"--out {out} exists and is not an empty folder: choose another (nothing is overwritten)")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:  # all the files, or none
        report = build(args, site, staging)
        (staging / "corpus.json").write_text(json.dumps(report, indent=2) + "\n")
        for path in [staging, *staging.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        if out.exists():
            out.rmdir()
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shown = ("version", "train", "test", "share_naming_own_package")
    print(json.dumps({name: {k: r[k] for k in shown} for name, r in report["packages"].items()}, indent=1))
    print(f"wrote {out}: {report['train']} training and {report['test']} test texts of {report['classes']} packages")


if __name__ == "__main__":
    sys.exit(main())
