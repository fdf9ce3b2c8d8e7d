"""The README's text commands, as the README writes them, run one after another on a corpus laid out as
``scripts/text_corpus.py`` writes it: pretrain, fine-tune from the pretrained checkpoint and its tokenizer,
evaluate, export, predict from stdin; TensorBoard holds the worst texts as tables. Only sizes are added (a tiny
network, a few steps)."""

from __future__ import annotations

import csv
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from test_reliability import SUBPROCESS_ENV
from test_text_data import QUIET, TINY_NETWORK, labelled_rows, write_corpus, write_csv

ROOT = Path(__file__).resolve().parents[1]
SHORT = [*TINY_NETWORK, *QUIET, "--trainer.max_steps=8", "--trainer.val_check_interval=4"]


def readme_text_commands() -> list[tuple[list[str], str | None]]:
    """The ``python -m project`` commands of the README's text section (continuation lines joined, ``$CKPT`` set),
    each with the text ``echo`` pipes into it, if any."""
    section = (ROOT / "README.md").read_text().split("## Text:", 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash", 1)[1].split("```", 1)[0].replace("\\\n", " ")
    checkpoint = re.search(r"^CKPT=(\S+)", block, re.MULTILINE).group(1)
    commands = []
    for line in block.splitlines():
        words = shlex.split(line.split(" #", 1)[0].replace("$CKPT", checkpoint))
        if "-m" in words and "project" in words:
            piped = words[1] if words[0] == "echo" else None
            commands.append((words[words.index("-m") + 1 :], piped))
    return commands


def run(words: list[str], folder: Path, stdin: str | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", *words]
    env = {**SUBPROCESS_ENV, "PROJECT_CACHE_DIR": str(folder / "cache")}
    result = subprocess.run(command, cwd=folder, input=stdin, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, f"{shlex.join(words)}\n{result.stderr[-3000:]}"
    return result


def test_the_readme_text_commands_pretrain_fine_tune_evaluate_export_and_predict(tmp_path):
    write_corpus(tmp_path / "corpus" / "unlabelled")
    write_csv(tmp_path / "corpus" / "train.csv", labelled_rows(200, seed=0))
    write_csv(tmp_path / "corpus" / "test.csv", labelled_rows(60, seed=1))
    commands = readme_text_commands()
    assert [words[1] for words, _ in commands] == ["fit", "fit", "evaluate", "export", "predict", "fit"]
    (pretrain, _), (finetune, _), (evaluate, _), (export, _), (predict, text), (bert, _) = commands
    run([*pretrain, *SHORT], tmp_path)
    tuned = run([*finetune, *SHORT], tmp_path)
    assert "Loaded" in tuned.stdout + tuned.stderr  # the pretrained backbone
    run(evaluate, tmp_path)
    report = (tmp_path / "logs" / "text" / "version_0" / "evaluation" / "test-last" / "report.md").read_text()
    assert "| sport |" in report and "worst" in report.lower()
    run(export, tmp_path)
    assert {"model.onnx", "tokenizer.json", "config.json"} <= set(os.listdir(tmp_path / "exported" / "text"))
    assert text and predict[-1] == "-"  # the README pipes a text into predict; here one of the data's topics
    run(predict, tmp_path, stdin="the band played a song on the piano\n")
    with (tmp_path / "predictions.csv").open() as file:
        (row,) = list(csv.DictReader(file))
    probabilities = [float(row[f"p_{name}"]) for name in ("food", "music", "sport")]
    assert row["predicted"] in {"food", "music", "sport"} and abs(sum(probabilities) - 1) < 1e-5
    assert "finetune_bert" in bert  # needs a download: tests/test_hf_text.py fine-tunes a BERT from a local folder

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = []
    for events in (tmp_path / "logs" / "text" / "version_0").glob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events), size_guidance={"tensors": 0})
        accumulator.Reload()
        tags += accumulator.Tags()["tensors"]
    assert any("worst" in tag for tag in tags), tags  # the worst texts, as a text summary
