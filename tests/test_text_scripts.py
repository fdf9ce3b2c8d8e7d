"""The text study's scripts: the docstring corpus (built from a fake site-packages tree), the study's table and plot,
and smoke runs of the study and the text benchmark."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import script_function

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = "This helper is shared word for word by both packages and so has no single right label at all."
REPEATED = "This helper is written twice in the first package and should be kept exactly once in its corpus."


def _write_package(site: Path, name: str, version: str, files: int, topic: str) -> None:
    """A package of ``files`` modules, three documented functions each (docstrings that name their file), plus a
    docstring repeated in two modules, one shared with the other package, a short one and a tests folder."""
    root = site / name
    (root / "tests").mkdir(parents=True)
    (root / "__init__.py").write_text(f'"""The {name} package: a fake library of many small helpers for tests."""\n')
    (root / "tests" / "test_it.py").write_text('"""A test module that the corpus must skip because it is a test."""\n')
    for i in range(files):
        functions = [
            f'def f{j}():\n    """Compute {topic} number {j} of module m{i} in {name} carefully, then return it.\n\n'
            f'    Parameters\n    ----------\n    x : secret{i}\n        Never part of the prose.\n    """\n'
            for j in range(3)
        ]
        (root / f"m{i}.py").write_text("\n".join(functions))
    (root / "m0.py").write_text((root / "m0.py").read_text() + f'\ndef shared():\n    """{SHARED}"""\n')
    (root / "m1.py").write_text((root / "m1.py").read_text() + '\ndef short():\n    """Too short."""\n')
    if name == "alpha":
        for i in (2, 3):
            (root / f"m{i}.py").write_text((root / f"m{i}.py").read_text() + f'\ndef again():\n    """{REPEATED}"""\n')
    dist = site / f"{name}-{version}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (dist / "top_level.txt").write_text(f"{name}\n")


@pytest.fixture
def fake_site(tmp_path) -> Path:
    site = tmp_path / "site-packages"
    _write_package(site, "alpha", "1.2.3", files=12, topic="graphs")
    _write_package(site, "beta", "0.1", files=10, topic="tables")
    return site


def _corpus(site: Path, out: Path, *extra: str) -> Path:
    main = script_function("text_corpus.py")
    main(["--out", str(out), "--site-packages", str(site), "--packages", "alpha", "beta", "--test-per-class", "6",
          "--min-train", "5", *extra])  # fmt: skip
    return out


def _rows(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def test_the_docstring_corpus_is_the_same_on_every_run_and_keeps_the_test_texts_out_of_training(fake_site, tmp_path):
    first, second = _corpus(fake_site, tmp_path / "one"), _corpus(fake_site, tmp_path / "two")
    files = sorted(p.relative_to(first).as_posix() for p in first.rglob("*") if p.is_file())
    assert files == ["corpus.json", "test.csv", "train.csv", "unlabelled/alpha.txt", "unlabelled/beta.txt"]
    assert all((first / name).read_bytes() == (second / name).read_bytes() for name in files)
    test, train = _rows(first / "test.csv"), _rows(first / "train.csv")
    assert _label_counts(test) == {"alpha": 6, "beta": 6}
    unlabelled = {name: (first / "unlabelled" / f"{name}.txt").read_text().split("\n\n") for name in ("alpha", "beta")}
    assert sorted(r["text"] for r in train) == sorted(t.strip() for texts in unlabelled.values() for t in texts)

    def modules(rows: list[dict]) -> set[tuple[str, str]]:  # the (package, source file) each text came from
        return {(r["label"], word) for r in rows for word in r["text"].split() if word[0] == "m" and word[1:].isdigit()}

    assert not modules(test) & modules(train)  # whole files held out: not even a sibling of a test text trains
    assert not {r["text"] for r in test} & {t for texts in unlabelled.values() for t in texts}
    report = json.loads((first / "corpus.json").read_text())
    assert report["packages"]["alpha"]["version"] == "1.2.3" and report["packages"]["beta"]["version"] == "0.1"
    assert report["options"]["seed"] == 0 and report["train"] == len(train) and report["test"] == 12


def _label_counts(rows: list[dict]) -> dict[str, int]:
    labels: dict[str, int] = {}
    for row in rows:
        labels[row["label"]] = labels.get(row["label"], 0) + 1
    return labels


def test_the_docstring_corpus_drops_shared_repeated_and_short_texts_and_hides_the_package_names(fake_site, tmp_path):
    out = _corpus(fake_site, tmp_path / "corpus")
    texts = [r["text"] for name in ("train.csv", "test.csv") for r in _rows(out / name)]
    assert SHARED not in texts and texts.count(REPEATED) <= 1  # once (or not at all: beside a test text)
    assert not any("short" in t.lower() or "secret" in t or "Never part" in t or "test module" in t for t in texts)
    assert all(len(t.split()) >= 10 for t in texts)
    assert not any("alpha" in t or "beta" in t for t in texts) and any("in PKG carefully" in t for t in texts)
    counts = json.loads((out / "corpus.json").read_text())["packages"]["alpha"]
    assert counts["dropped_repeated"] == 1 and counts["dropped_short"] == 1
    assert counts["dropped_shared"] == 2  # SHARED, and "The PKG package: ..." (the same in both once names are hidden)
    assert counts["share_naming_own_package"] > 0.9  # every generated docstring names its package
    kept = _corpus(fake_site, tmp_path / "kept", "--keep-names")  # negative control: the names stay
    assert any("in alpha carefully" in r["text"] for r in _rows(kept / "train.csv"))


def test_the_docstring_corpus_refuses_a_folder_with_files_and_leaves_nothing_when_a_package_is_too_small(
    fake_site, tmp_path, capsys
):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit):
        _corpus(fake_site, taken)
    assert "exists and is not an empty folder" in capsys.readouterr().err and (taken / "keep.txt").read_text() == "mine"
    with pytest.raises(SystemExit, match="alpha gives 6 test and 18 training docstrings"):
        _corpus(fake_site, tmp_path / "small", "--min-train", "1000")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site-packages", "taken"]  # no half-written corpus


def test_the_text_study_writes_its_table_json_and_plot_and_shows_a_loss_as_a_loss(tmp_path):
    write_results = script_function("text_study.py", "write_results")
    settings = write_results.__globals__["Settings"]()
    scratch, pretrained = write_results.__globals__["SCRATCH"], write_results.__globals__["PRETRAINED"]
    accuracies = {(10, scratch): (0.5, 0.6), (10, pretrained): (0.7, 0.8), (50, scratch): (0.9, 0.9),
                  (50, pretrained): (0.85, 0.85)}  # fmt: skip
    rows = [{"labels_per_class": size, "seed": seed, "method": method, "test_accuracy": accuracy}
            for (size, method), values in accuracies.items() for seed, accuracy in enumerate(values)]  # fmt: skip
    write_results(tmp_path, rows, settings, {"corpus": {"classes": 8}})
    lines = (tmp_path / "text_study.md").read_text().splitlines()
    assert lines[0] == "Test accuracy (chance 12.5%), mean ± sd over 2 seeds (each seed's in brackets):"
    assert lines[2] == "| labels per class | from scratch | pretrained | pretrained minus scratch |"
    assert lines[4] == "| 10 | 55.0% ± 7.1% (50.0%, 60.0%) | 75.0% ± 7.1% (70.0%, 80.0%) | +20.0 points |"
    assert lines[5] == "| 50 | 90.0% ± 0.0% (90.0%, 90.0%) | 85.0% ± 0.0% (85.0%, 85.0%) | -5.0 points |"  # a loss
    report = json.loads((tmp_path / "text_study.json").read_text())
    assert report["summary"]["10"]["pretrained"]["seeds"] == {"0": 0.7, "1": 0.8} and len(report["runs"]) == 8
    assert report["settings"]["steps"] == settings.steps and report["corpus"] == {"classes": 8}
    assert (tmp_path / "text_study.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    write_results(tmp_path, rows[:2], settings, {})  # negative control: one method alone gives no gain
    assert (tmp_path / "text_study.md").read_text().splitlines()[4].endswith("| — | — |")


@pytest.fixture
def small_corpus(tmp_path) -> Path:
    """A corpus of three generated packages, large enough for a tokenizer and a few batches of every size."""
    site = tmp_path / "site-packages"
    for name, topic in (("alpha", "graphs"), ("beta", "tables"), ("gamma", "images")):
        _write_package(site, name, "1.0", files=30, topic=topic)
    return _corpus(site, tmp_path / "corpus", "--test-per-class", "10", "--packages", "alpha", "beta", "gamma")


def _script(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, str(REPO_ROOT / "scripts" / name), *args]
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(command, capture_output=True, text=True, env=environment, cwd=cwd, timeout=900)


@pytest.mark.slow
def test_the_text_study_pretrains_once_and_fine_tunes_each_size_seed_and_method_quickly(small_corpus, tmp_path):
    out = tmp_path / "study"
    work = tmp_path / "work"
    result = _script("text_study.py", "--corpus", str(small_corpus), "--out", str(out), "--work", str(work), "--quick",
                     "--sizes", "2", "5", "--seeds", "0", "1", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((out / "text_study.json").read_text())
    assert len(report["runs"]) == 2 * 2 * 2 and report["settings"]["steps"] == 10
    assert all(0 <= run["test_accuracy"] <= 1 and run["optimizer_steps"] == 10 for run in report["runs"])
    assert Path(report["pretraining"]["checkpoint"]).is_file() and report["corpus"]["classes"] == 3
    assert "| 5 |" in (out / "text_study.md").read_text() and (out / "text_study.png").is_file()
    assert report["pretraining"]["checkpoint"] == str(tmp_path / "work" / "pretrained.ckpt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus", "site-packages", "study", "work"]  # no logs


@pytest.mark.slow
def test_the_text_benchmark_times_pretraining_fine_tuning_and_padding_quickly(small_corpus, tmp_path):
    out = tmp_path / "benchmark_text.json"
    result = _script("benchmark_text.py", "--corpus", str(small_corpus), "--quick", "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "| run | tokens/s (real) | tokens/s (with padding) |" in result.stdout
    report = json.loads(out.read_text())
    assert [run["run"] for run in report["runs"]] == ["pretraining", "fine-tuning", "fine-tuning, bucketed"]
    assert all(run["real_tokens_per_s"] > 0 and run["peak_rss_mb"] > 0 for run in report["runs"])
    ways = {row["batches"]: row for row in report["padding"]}
    assert ways["padded to max_length"]["vs_max_length"] == 1.0
    assert ways["bucketed by length"]["real_tokens_share"] >= ways["dynamic padding"]["real_tokens_share"]
    assert not (tmp_path / "logs").exists()
