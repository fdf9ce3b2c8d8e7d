"""Everything after training, for text: predict (files, stdin), export on token ids with its tokenizer, evaluate's
report, TensorBoard's tables of texts; each as the image side does it."""

from __future__ import annotations

import csv
import io
import json
import random
from functools import partial
from pathlib import Path
from typing import ClassVar

import lightning as L
import pytest
import torch
from torch.utils.data import Dataset

from project.data import ImageDataModule
from project.data.tokenizer import TextTokenizer
from project.errors import UserInputError
from project.inference.export import export_checkpoint, run_export
from project.inference.prediction import Predictor, TextPredictor
from project.inference.prediction_files import predict_files, text_lines
from project.networks import TextTransformer
from project.reports import RunLogger, TensorBoardReports
from project.training.task_module import TaskModule

CLASSES = {"cats": ["cat", "kitten", "purr", "whiskers"], "dogs": ["dog", "puppy", "bark", "leash"]}
WORDS_OF_CLASSES = {word for words in CLASSES.values() for word in words}
FILLER = ["the", "a", "small", "big", "runs", "sleeps", "near", "house", "garden", "today", "again", "very"]
MAX_LENGTH = 32


def generated_texts(count: int, seed: int) -> tuple[list[str], list[int]]:
    """Texts of 2 classes: filler words around one or two words of the class."""
    rng = random.Random(seed)
    texts, labels = [], []
    for index in range(count):
        label = index % 2
        words = [rng.choice(FILLER) for _ in range(rng.randint(2, 14))]
        for _ in range(rng.randint(1, 2)):
            words.insert(rng.randint(0, len(words)), rng.choice(list(CLASSES.values())[label]))
        texts.append(" ".join(words))
        labels.append(label)
    return texts, labels


class _TokenisedTexts(Dataset):
    def __init__(self, ids: list[list[int]], labels: list[int]) -> None:
        self.ids, self.labels = ids, torch.tensor(labels)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return torch.tensor(self.ids[index]), int(self.labels[index])


class TinyTexts(ImageDataModule):
    """Generated texts of two classes, tokenised with a tokenizer trained on them: a stand-in for the project's text
    data module in these tests (batches of ``(ids, targets)``, padded per batch with 0)."""

    named_classes: ClassVar[list[str]] = list(CLASSES)
    num_classes = 2

    def __init__(self, count: int = 160, max_length: int = MAX_LENGTH, **kwargs) -> None:
        super().__init__(**kwargs)
        self.count, self.max_length = count, max_length
        self.tokenizer = TextTokenizer.train(generated_texts(count, seed=0)[0], vocab_size=200)
        self.vocab_size = self.tokenizer.vocab_size

    def load_split(self, train: bool) -> Dataset:
        texts, labels = generated_texts(self.count if train else 40, seed=0 if train else 1)
        return _TokenisedTexts(self.tokenizer.encode(texts, self.max_length), labels)

    def split_labels(self, dataset: Dataset) -> torch.Tensor:
        return dataset.labels

    def collation(self, dataset: Dataset):
        tokenizer = self.tokenizer

        def padded(examples):
            return tokenizer.pad([ids for ids, _ in examples]), torch.tensor([label for _, label in examples])

        return padded

    def network_batch(self, batch, augment: bool):
        return batch

    def preprocessing(self) -> dict:
        return {"tokenizer": self.tokenizer.to_json(), "max_length": self.max_length, "class_names": self.class_names}


@pytest.fixture(scope="module")
def text_run(tmp_path_factory) -> Path:
    """A run folder of a tiny text classifier trained 64 steps, with TensorBoard's reports: its ``last.ckpt``."""
    folder = tmp_path_factory.mktemp("text_run")
    L.seed_everything(0)
    data = TinyTexts(batch_size=16, split={"val_size": 32})
    network = TextTransformer(data.vocab_size, 2, width=32, depth=1, heads=2, max_length=MAX_LENGTH, dropout=0.0)
    logger = RunLogger(save_dir=str(folder), name="text", version=0, log_graph=True)
    trainer = L.Trainer(
        max_steps=64,
        accelerator="cpu",
        logger=logger,
        callbacks=[TensorBoardReports(samples=4)],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        check_val_every_n_epoch=2,
        log_every_n_steps=5,
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a network this small trains fastest on one thread (on a busy machine, 10 times faster)
    try:
        trainer.fit(TaskModule(network, optimizer=partial(torch.optim.AdamW, lr=5e-3)), data)
    finally:
        torch.set_num_threads(threads)
    checkpoint = Path(logger.log_dir) / "checkpoints" / "last.ckpt"
    trainer.save_checkpoint(checkpoint)
    return checkpoint


@pytest.fixture(scope="module")
def text_export(text_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("text_export") / "model"
    export_checkpoint(text_run, out, ("onnx", "safetensors"))
    return out


def test_a_text_checkpoint_records_its_tokenizer_and_max_length(text_run):
    preprocessing = torch.load(text_run, weights_only=True)["preprocessing"]
    assert set(preprocessing) == {"tokenizer", "max_length", "class_names"}
    assert preprocessing["class_names"] == ["cats", "dogs"] and preprocessing["max_length"] == MAX_LENGTH
    assert TextTokenizer.from_json(preprocessing["tokenizer"]).vocab_size > 20


def test_a_text_export_holds_the_tokenizer_beside_the_onnx_of_token_ids(text_export, text_run):
    assert sorted(path.name for path in text_export.iterdir()) == [
        "README.md", "config.json", "model.onnx", "model.safetensors", "tokenizer.json"
    ]  # fmt: skip
    config = json.loads((text_export / "config.json").read_text())
    recorded = torch.load(text_run, weights_only=True)["preprocessing"]
    assert config["preprocessing"] == {**recorded, "tokenizer": "tokenizer.json"}  # the file's name, not its JSON
    assert (text_export / "tokenizer.json").read_text() == recorded["tokenizer"]
    assert config["input"].startswith("int64 ids (batch, length)") and config["files"][-1] == "tokenizer.json"
    assert set(config["largest_difference_from_the_checkpoint"]) == {"model.onnx"}
    import onnx

    (ids,) = onnx.load(str(text_export / "model.onnx")).graph.input
    dims = ids.type.tensor_type.shape.dim
    assert ids.name == "ids" and [dim.dim_param != "" for dim in dims] == [True, True]  # batch and length: free
    card = (text_export / "README.md").read_text()
    assert "text-classification" in card and "texts" in card and " images" not in card


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


TEXTS = ["a kitten sleeps near the house", "the puppy runs to the garden and barks", "=cmd|' /C calc'!A0 dog"]


def test_texts_are_predicted_alike_from_the_checkpoint_the_folder_and_the_onnx_file(text_run, text_export, tmp_path):
    (tmp_path / "texts.txt").write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    rows = {}
    for name, model in {"ckpt": text_run, "folder": text_export, "onnx": text_export / "model.onnx"}.items():
        count, skipped = predict_files(model, [str(tmp_path / "texts.txt")], tmp_path / f"{name}.csv", batch_size=2)
        assert count == 3 and skipped == []
        rows[name] = read_csv(tmp_path / f"{name}.csv")
    assert list(rows["ckpt"][0]) == ["text", "predicted", "p_cats", "p_dogs"]
    assert [row["text"] for row in rows["ckpt"]] == [*TEXTS[:2], "'" + TEXTS[2]]  # spreadsheet-safe
    assert [row["predicted"] for row in rows["ckpt"]][:2] == ["cats", "dogs"]  # it learned the words
    for name in ("folder", "onnx"):
        assert [row["predicted"] for row in rows[name]] == [row["predicted"] for row in rows["ckpt"]]
        for got, expected in zip(rows[name], rows["ckpt"], strict=True):
            assert float(got["p_dogs"]) == pytest.approx(float(expected["p_dogs"]), abs=1e-5)


def test_a_text_model_reads_stdin_and_skips_empty_lines_saying_which(text_export, tmp_path):
    texts, skipped = text_lines(["-"], stdin=io.StringIO("a purring cat\n\n   \nthe dog\n"))
    assert texts == ["a purring cat", "the dog"] and skipped == ["stdin:2: an empty line", "stdin:3: an empty line"]
    (tmp_path / "more.txt").write_text("whiskers\n", encoding="utf-8")
    assert text_lines([str(tmp_path / "more.txt"), "-"], stdin=io.StringIO("bark"))[0] == ["whiskers", "bark"]
    with pytest.raises(UserInputError, match="no text in -"):
        text_lines(["-"], stdin=io.StringIO("\n\n"))
    with pytest.raises(UserInputError, match="a folder; a text model reads text files"):
        text_lines([str(tmp_path)])
    with pytest.raises(UserInputError, match="--mnist_style prepares images of digits"):
        predict_files(text_export, [str(tmp_path / "more.txt")], tmp_path / "out.csv", mnist_style=True)


def test_project_load_of_a_text_folder_predicts_texts(text_export, text_run):
    import project

    for onnx in (False, True):
        model = project.load(text_export, onnx=onnx)
        assert isinstance(model, TextPredictor) and (model.network is None) == onnx
        rows, skipped = model.predict(TEXTS[:2])
        assert [row["predicted"] for row in rows] == ["cats", "dogs"] and skipped == []
    batch = model.ids(TEXTS[:2])
    assert batch.dtype == torch.long and batch.shape[0] == 2 and (batch[0] == 0).any()  # padded to the longest
    assert isinstance(Predictor.load(text_run), TextPredictor)


def test_the_onnx_file_gives_the_checkpoints_outputs_on_texts_of_other_lengths_and_batch_sizes(text_export, text_run):
    model = Predictor.load(text_run)
    short, long = model.ids([*TEXTS[:2], "dog"]), model.ids([" ".join(["cat"] * 60)])
    assert short.shape[0] == 3 and long.shape == (1, MAX_LENGTH)  # two batch sizes, two lengths (one cut)
    for ids in (short, long):
        torch.testing.assert_close(run_export(text_export / "model.onnx", ids), model.run(ids), atol=1e-5, rtol=1e-5)
    network = TaskModule.load_from_checkpoint(text_run).network.eval()
    with torch.no_grad():
        network.head.weight[0, 0] += 0.01  # the negative control: one weight changed a little
        assert (run_export(text_export / "model.onnx", short) - network(short)).abs().max() > 1e-4


def test_predict_of_a_text_model_runs_as_a_subcommand_from_stdin(text_export, tmp_path, capsys, monkeypatch):
    from project.cli.commands import main

    monkeypatch.setattr("sys.stdin", io.StringIO("a kitten\n\nthe puppy barks\n"))
    out = tmp_path / "predictions.csv"
    main(["predict", str(text_export), "-", "--out", str(out), "--batch_size", "1"])
    captured = capsys.readouterr()
    assert f"wrote 2 predictions to {out} (1 empty lines skipped)" in captured.out
    assert "skipped stdin:2: an empty line" in captured.err
    assert [row["predicted"] for row in read_csv(out)] == ["cats", "dogs"]


def test_evaluate_reports_a_text_model_with_its_class_names_and_worst_texts(text_run, tmp_path):
    from project.inference.evaluation import WORST_TEXTS, evaluate_checkpoint

    markdown, written = evaluate_checkpoint(text_run, "test", out=tmp_path / "report")
    report = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert report["class_names"] == ["cats", "dogs"] and report["count"] == 40
    assert [row["class"] for row in report["per_class"]] == ["cats", "dogs"]
    assert sum(map(sum, report["confusion_matrix"])) == 40
    worst = report["worst_texts"]
    assert len(worst) == min(WORST_TEXTS, 40) and list(worst[0]) == ["text", "true", "predicted", "loss"]
    assert [row["loss"] for row in worst] == sorted((row["loss"] for row in worst), reverse=True)
    assert worst[0]["true"] in ("cats", "dogs") and worst[0]["text"].split()[0] in {*FILLER, *WORDS_OF_CLASSES}
    assert "| text | true | predicted | loss |" in markdown and "| true \\ predicted | cats | dogs |" in markdown
    assert [path.name for path in written] == ["metrics.json", "report.md", "confusion_matrix.png"]


def test_evaluate_refuses_a_masked_token_checkpoint_in_one_line(text_run, tmp_path):
    from project.inference.evaluation import evaluate_checkpoint

    checkpoint = torch.load(text_run, weights_only=True)
    vocab = checkpoint["hyper_parameters"]["network"]["init_args"]["vocab_size"]
    checkpoint["hyper_parameters"]["network"]["init_args"].update(per_token=True, num_outputs=vocab)
    checkpoint["hyper_parameters"]["task"] = {"class_path": "project.tasks.MaskedTokens", "init_args": {}}
    checkpoint["state_dict"]["network.head.weight"] = torch.zeros(vocab, 32)
    checkpoint["state_dict"]["network.head.bias"] = torch.zeros(vocab)
    torch.save(checkpoint, tmp_path / "pretrained.ckpt")
    with pytest.raises(UserInputError, match=r"is a masked-token \(pretraining\) checkpoint: evaluate") as error:
        evaluate_checkpoint(tmp_path / "pretrained.ckpt", "test", out=tmp_path / "report")
    assert "\n" not in str(error.value) and "val/perplexity" in str(error.value)
    assert f"validate --config {tmp_path.parent / 'config.yaml'} --ckpt_path {tmp_path / 'pretrained.ckpt'}" in str(
        error.value
    )
    assert not (tmp_path / "report").exists()


def test_tensorboard_shows_the_worst_texts_as_a_table_no_image_grid_of_them_and_the_graph(text_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    accumulator = EventAccumulator(str(text_run.parent.parent), size_guidance={"tensors": 0, "images": 0})
    accumulator.Reload()
    assert accumulator.Tags()["images"] == ["val/confusion_matrix"]  # no grids of token ids
    assert accumulator.Tags()["graph"]  # traced without gradients: nn.TransformerEncoder's trace check passes
    tags = accumulator.Tags()["tensors"]
    assert {"val/worst/text_summary", "val/samples/text_summary"} <= set(tags)
    events = accumulator.Tensors("val/worst/text_summary")
    assert len(events) >= 2  # one a validation
    table = tensor_util.make_ndarray(events[-1].tensor_proto).item().decode()
    lines = table.splitlines()
    assert lines[0] == "| text | true | predicted | loss |" and len(lines) == 2 + 4  # the 4 worst
    words = {*FILLER, *WORDS_OF_CLASSES}
    assert all(line.split(" | ")[0].removeprefix("| ").split()[0] in words for line in lines[2:])  # decoded texts
    assert all(line.split(" | ")[1] in ("cats", "dogs") for line in lines[2:])


def test_serve_refuses_a_text_model_in_one_line(text_export):
    pytest.importorskip("uvicorn")
    from project.inference.serving import ServeSettings, serve

    with pytest.raises(UserInputError, match="is a text model: serve predicts images; use python -m project predict"):
        serve(text_export, ServeSettings(port=0))


def test_a_text_table_keeps_each_text_on_one_line_within_its_cell():
    from project.reports.texts import markdown_table

    table = markdown_table([{"text": "a | b\nc " + "x" * 300, "true": "cats", "loss": 1.23456}])
    assert table.splitlines()[2] == f"| a \\| b c {'x' * 191}… | cats | 1.2346 |"


def test_a_text_onnx_file_predicts_without_torch_as_the_torch_path_does(text_export, tmp_path, monkeypatch):
    import subprocess
    import sys

    from project.inference.prediction_files import write_csv

    texts = [*TEXTS, " ".join(["whiskers"] * 50), "ünïcödé Kätzchen purr"]  # one cut to max_length, accents
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    through_torch, _ = Predictor.from_folder(text_export, onnx=True).predict(texts, batch_size=2)
    write_csv(through_torch, tmp_path / "torch.csv")
    with monkeypatch.context() as patched:  # the torch path is not there: the rows are the torch-free path's
        patched.setattr(Predictor, "load", lambda *args: pytest.fail("the torch path ran"))
        for name, model in (("folder", text_export), ("onnx", text_export / "model.onnx")):
            predict_files(model, [str(tmp_path / "texts.txt")], tmp_path / f"{name}.csv", batch_size=2)
            assert (tmp_path / f"{name}.csv").read_text() == (tmp_path / "torch.csv").read_text()
    code = (
        "import sys\nfrom project.__main__ import main\n"
        "main(['predict', sys.argv[1], sys.argv[2], '--out', sys.argv[3]])\n"
        "print('loaded:', sorted(name for name in ('torch', 'lightning') if name in sys.modules))\n"
    )
    command = [sys.executable, "-c", code, str(text_export), str(tmp_path / "texts.txt"), str(tmp_path / "cli.csv")]
    result = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).parents[1], timeout=120)
    assert result.returncode == 0 and "loaded: []" in result.stdout, result.stderr[-2000:]
    assert (tmp_path / "cli.csv").read_text() == (tmp_path / "torch.csv").read_text()
