"""Text data: labelled texts (CSV, JSON Lines, a folder per class) and a raw corpus tokenised once into a cache, their
batches (dynamic padding, BERT's masking), splits, refusals, exact resume, and the README's two commands."""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_reliability import SUBPROCESS_ENV, assert_same_training_state

from project.data import TextCorpusDataModule, TextDataModule
from project.data.masking import TokenMasking
from project.data.tokenizer import TextTokenizer
from project.errors import UserInputError

TOPICS = {
    "food": ["bread", "soup", "salt", "cook", "taste", "meal", "apple", "butter", "kitchen"],
    "music": ["song", "drum", "piano", "note", "band", "sing", "tune", "guitar", "chorus"],
    "sport": ["ball", "goal", "team", "match", "score", "coach", "runner", "stadium", "referee"],
}
COMMON = ["the", "a", "and", "with", "very", "today", "we", "they", "played", "made", "quickly", "slowly"]
NETWORK = "--model.network.init_args"
TINY_NETWORK = [f"{NETWORK}.width=32", f"{NETWORK}.heads=2", f"{NETWORK}.depth=1", f"{NETWORK}.max_length=32",
                f"{NETWORK}.vocab_size=400", "--data.max_length=32", "--data.vocab_size=300"]  # fmt: skip
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def labelled_rows(count: int, seed: int = 0) -> list[tuple[str, str]]:
    """``count`` generated texts of 3 topics, each text a few of its topic's words among common ones."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        label = rng.choice(sorted(TOPICS))
        words = [rng.choice(TOPICS[label] if rng.random() < 0.4 else COMMON) for _ in range(rng.randint(3, 20))]
        rows.append((" ".join(words), label))
    return rows


def write_csv(path: Path, rows: list[tuple[str, str]], header: tuple[str, str] = ("text", "label")) -> Path:
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_corpus(folder: Path, files: int = 2, lines: int = 300, seed: int = 1) -> Path:
    rng = random.Random(seed)
    words = [word for topic in TOPICS.values() for word in topic] + COMMON
    folder.mkdir(parents=True, exist_ok=True)
    for number in range(files):
        text = "\n".join(" ".join(rng.choice(words) for _ in range(rng.randint(4, 25))) for _ in range(lines))
        (folder / f"part{number}.txt").write_text(text + "\n")
    return folder


@pytest.fixture
def texts_csv(tmp_path) -> Path:
    return write_csv(tmp_path / "texts.csv", labelled_rows(240))


@pytest.fixture
def corpus(tmp_path) -> Path:
    return write_corpus(tmp_path / "corpus")


def labelled(path: Path, **options) -> TextDataModule:
    return TextDataModule(train=str(path), **{"vocab_size": 300, "max_length": 32, "batch_size": 16, **options})


def pretraining(folder: Path, **options) -> TextCorpusDataModule:
    defaults = {"files": str(folder), "vocab_size": 300, "max_length": 32, "batch_size": 8}
    return TextCorpusDataModule(**{**defaults, **options})


# -- labelled texts ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("in_memory", [True, False])
def test_batches_are_padded_to_the_longest_text_of_the_batch_not_to_max_length(texts_csv, in_memory):
    data = labelled(texts_csv, max_length=64, loading={"in_memory": in_memory})
    data.setup("fit")
    assert ("train" in data.memory) == in_memory
    widths = []
    for batch in data.train_dataloader():
        ids, targets = data.network_batch(batch, augment=True)
        lengths = (ids != 0).sum(dim=1)
        assert ids.shape[1] == lengths.max() and len(targets) == len(ids)
        assert (ids[:, 0] == data.tokenizer.cls_id).all()
        widths.append(ids.shape[1])
    assert max(widths) < 64 and len(set(widths)) > 1  # negative control: never padded to max_length


def test_the_in_memory_path_gives_the_batches_a_dataloader_gives(texts_csv):
    batches = {}
    for in_memory in (True, False):
        data = labelled(texts_csv, loading={"in_memory": in_memory}, split={"shuffle_seed": 3})
        data.setup("fit")
        batches[in_memory] = [data.network_batch(batch, augment=True) for batch in data.train_dataloader()]
    for (ids, targets), (other_ids, other_targets) in zip(batches[True], batches[False], strict=True):
        assert torch.equal(ids, other_ids) and torch.equal(targets, other_targets)


def test_csv_json_lines_and_a_folder_per_class_give_the_same_examples(tmp_path):
    rows = labelled_rows(60)
    write_csv(tmp_path / "texts.csv", rows)
    (tmp_path / "texts.jsonl").write_text("".join(json.dumps({"text": t, "label": c}) + "\n" for t, c in rows))
    for number, (text, label) in enumerate(rows):
        (tmp_path / "folder" / label).mkdir(parents=True, exist_ok=True)
        (tmp_path / "folder" / label / f"{number:04d}.txt").write_text(text)
    tokenizer = tmp_path / "tokenizer.json"
    tokenizer.write_text(TextTokenizer.train([text for text, _ in rows], 300).to_json())
    examples = {}
    for source in ("texts.csv", "texts.jsonl", "folder"):
        data = labelled(tmp_path / source, tokenizer=str(tokenizer), test="texts.csv", data_dir=str(tmp_path))
        data.setup("fit")
        assert data.class_names == ["food", "music", "sport"]
        examples[source] = sorted((tuple(ids.tolist()), int(label)) for ids, label in data.tokenised("train"))
    assert examples["texts.csv"] == examples["texts.jsonl"] == examples["folder"]


def padding_of(data: TextDataModule) -> tuple[int, list[int]]:
    """The padding tokens of an epoch of ``data``'s training batches, and the texts in the order they came."""
    padding, order = 0, []
    for batch in data.train_dataloader():
        ids, _ = data.network_batch(batch, augment=True)
        padding += int((ids == 0).sum())
        order += [tuple(row[row != 0].tolist()) for row in ids]
    return padding, order


@pytest.mark.parametrize("in_memory", [True, False])
def test_bucketed_batches_hold_less_padding_cover_every_text_once_and_resume_where_they_stopped(texts_csv, in_memory):
    plain = labelled(texts_csv, loading={"in_memory": in_memory})
    bucketed = labelled(texts_csv, loading={"in_memory": in_memory}, bucket_window=4)
    for data in (plain, bucketed):
        data.setup("fit")
    (plain_padding, plain_order), (padding, order) = padding_of(plain), padding_of(bucketed)
    assert sorted(order) == sorted(plain_order) and padding < plain_padding / 2
    assert padding_of(bucketed)[1] == order  # the same epoch, the same order
    from project.data.sampler import Position

    bucketed.resumed_at = Position(0, 3 * bucketed.batch_size)  # as a checkpoint after 3 batches leaves it
    assert padding_of(bucketed)[1] == order[3 * bucketed.batch_size :]


def test_integer_labels_are_the_class_indices_and_names_are_sorted(tmp_path):
    rows = [(text, str(sorted(TOPICS).index(label) * 5)) for text, label in labelled_rows(60)]  # 0, 5, 10
    data = labelled(write_csv(tmp_path / "numbers.csv", rows))
    assert data.num_classes == 11 and data.class_names[10] == "10"  # "10" is not sorted before "5"
    named = labelled(write_csv(tmp_path / "names.csv", [(t, f"c{int(n)}") for t, n in rows]))
    assert named.class_names == ["c0", "c10", "c5"]


def test_a_few_shot_subset_keeps_that_many_texts_of_each_class(texts_csv):
    data = labelled(texts_csv, split={"samples_per_class": 5})
    data.setup("fit")
    assert sorted(data.split_labels(data.train_set).tolist()) == [0] * 5 + [1] * 5 + [2] * 5


def test_the_held_out_test_texts_are_not_trained_on_and_the_preprocessing_records_the_tokenizer(texts_csv):
    data = labelled(texts_csv, split={"test_size": 0.25})
    data.setup("fit")
    train, test = set(data.train_set.dataset.indices), set(data.test_set.indices)
    assert len(test) == 60 and not train & test
    recorded = data.preprocessing()
    assert TextTokenizer.from_json(recorded["tokenizer"]).fingerprint == data.tokenizer.fingerprint
    assert recorded["max_length"] == 32 and recorded["class_names"] == ["food", "music", "sport"]


def test_a_tokenizer_trained_on_the_texts_is_kept_and_found_again(texts_csv):
    first, second = labelled(texts_csv), labelled(texts_csv)  # training one again gives another: it is found
    assert first.tokenizer.fingerprint == second.tokenizer.fingerprint
    assert labelled(texts_csv, vocab_size=200).tokenizer.fingerprint != first.tokenizer.fingerprint


NO_COLUMNS = r"has no column text \(data.text_column\) and label \(data.label_column\): its columns are words, kind"


@pytest.mark.parametrize(
    ("content", "options", "message"),
    [
        (None, {}, r"data.train: .*missing.csv does not exist"),
        ("words,kind\nhello,a\n", {}, NO_COLUMNS),
        ("text,label\nhello,a\n  ,b\n", {}, r"line 3: the text is empty"),
        ("text,label\nhello,a\n", {}, r"holds one class"),
        ("text,label\nhello,a\nbye,b\n", {"augment": {"shift": 2}}, r"^data.augment: .*token ids"),
        ("text,label\nhello,a\nbye,b\n", {"tokenizer": "texts.csv"}, r"^data.tokenizer: .* is none of a tokenizer"),
        ("text,label\nhello,a\nbye,b\n", {"tokenizer": "nowhere.json"}, r"^data.tokenizer: .*nowhere.json does not"),
    ],
)
def test_bad_labelled_texts_are_refused_in_one_line(tmp_path, content, options, message):
    if content is not None:
        (tmp_path / "texts.csv").write_text(content)
    name = "texts.csv" if content is not None else "missing.csv"
    if "tokenizer" in options:
        options["tokenizer"] = str(tmp_path / options["tokenizer"])
    with pytest.raises(UserInputError, match=message) as caught:
        TextDataModule(train=name, data_dir=str(tmp_path), vocab_size=300, **options)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"bucket_window": -1}, r"^data\.bucket_window must be 0 \(off\) or a number of batches, got -1$"),
        ({"max_length": 2}, r"^data\.max_length must be at least 3 \(\[CLS\], a token, \[SEP\]\), got 2$"),
        ({"vocab_size": 3}, r"^data\.vocab_size must be at least 6, got 3$"),
        ({"tokenizer": "weights.ckpt"}, r"^data\.tokenizer: .*weights\.ckpt is a checkpoint that records no tokenizer"),
        ({"tokenizer": "junk.ckpt"}, r"^data\.tokenizer: .*junk\.ckpt is not a checkpoint that loads with torch\.load"),
        ({"train": "texts.jsonl"}, r"texts\.jsonl.* not JSON"),
        ({"train": "floats.jsonl"}, r"the label \(label\) must be a class name or an integer, got 1\.5$"),
    ],
)
def test_options_a_text_module_cannot_take_are_refused_in_one_line_naming_them(tmp_path, options, message):
    write_csv(tmp_path / "texts.csv", labelled_rows(20))
    (tmp_path / "floats.jsonl").write_text('{"text": "some text", "label": 1.5}\n{"text": "more", "label": 2}\n')
    (tmp_path / "texts.jsonl").write_text('{"text": "hello", "label": "a"}\nnot json\n')
    torch.save({"backbone.weight": torch.zeros(1)}, tmp_path / "weights.ckpt")
    (tmp_path / "junk.ckpt").write_text("not a checkpoint")
    if "tokenizer" in options:
        options["tokenizer"] = str(tmp_path / options["tokenizer"])
    arguments = {"train": "texts.csv", "data_dir": str(tmp_path), "vocab_size": 300, **options}
    with pytest.raises(UserInputError, match=message) as caught:
        TextDataModule(**arguments)
    assert "\n" not in str(caught.value)


def test_a_mask_rate_outside_0_to_1_is_refused(corpus):
    with pytest.raises(UserInputError, match=r"^data\.mask_rate must lie in \(0, 1\), got 1\.5$"):
        pretraining(corpus, mask_rate=1.5)
    pretraining(corpus, mask_rate=0.3)  # the control


# -- the corpus ----------------------------------------------------------------------------------------------------


def test_the_corpus_is_tokenised_once_and_the_blocks_are_consecutive_cls_block_sep(corpus):
    data = pretraining(corpus)
    data.prepare_data()
    tokens = torch.from_numpy(data.corpus.tokens().astype("int64"))
    lines = [line for path in sorted(corpus.glob("*.txt")) for line in path.read_text().splitlines(keepends=True)]
    expected = torch.cat([torch.tensor(ids) for ids in data.tokenizer.encode_plain(lines)])
    assert torch.equal(tokens, expected)
    data.setup("fit")
    blocks = data.train_set.dataset.dataset  # the training part of the part not held out for testing
    first, _ = blocks[0]
    assert first.tolist() == [data.tokenizer.cls_id, *tokens[:30].tolist(), data.tokenizer.sep_id]
    assert len(blocks) == -(-len(tokens) // 30) and data.num_classes == data.vocab_size == data.tokenizer.vocab_size


def test_the_cache_is_reused_rebuilt_when_a_file_changes_and_a_half_written_one_is_never_used(corpus, monkeypatch):
    from project.data.token_cache import TokenCache

    calls = []
    original = TokenCache.encoded
    monkeypatch.setattr(TokenCache, "encoded", lambda self, lines: calls.append(len(lines)) or original(self, lines))
    tokenizer = str(corpus.parent / "tokenizer.json")
    Path(tokenizer).write_text(TextTokenizer.train(["the bread and the song"] * 10, 300).to_json())
    data = pretraining(corpus, tokenizer=tokenizer)
    data.prepare_data()
    built, stamp, count = len(calls), data.corpus.tokens_path.stat().st_mtime_ns, len(data.corpus.tokens())
    pretraining(corpus, tokenizer=tokenizer).prepare_data()
    assert built > 0 and len(calls) == built and data.corpus.tokens_path.stat().st_mtime_ns == stamp  # reused
    with (corpus / "part0.txt").open("a") as file:
        file.write("the referee made a goal\n")
    changed = pretraining(corpus, tokenizer=tokenizer)
    changed.prepare_data()
    assert len(calls) > built and len(changed.corpus.tokens()) > count
    changed.corpus.manifest_path.unlink()  # killed between the ids and the manifest
    again = pretraining(corpus, tokenizer=tokenizer)
    assert not again.files_ready()
    rebuilt = len(calls)
    again.prepare_data()
    assert len(calls) > rebuilt and again.files_ready()


def test_a_corpus_larger_than_a_piece_streams_in_pieces_to_the_same_ids(corpus, monkeypatch, tmp_path):
    from project.data import token_cache

    whole = pretraining(corpus)
    whole.prepare_data()
    monkeypatch.setattr(token_cache, "_CHUNK_CHARACTERS", 500)
    pieces = pretraining(corpus)
    pieces.corpus = token_cache.TokenCache(tmp_path / "pieces", pieces.paths, "stamp", whole.tokenizer)
    pieces.prepare_data()
    assert (pieces.corpus.tokens() == whole.corpus.tokens()).all()


@pytest.mark.parametrize(
    ("files", "message"),
    [(["nowhere"], r"data.files: .*nowhere does not exist"), (["empty"], r"data.files: the corpus is empty"),
     (["blank"], r"data.files: the corpus is empty"), (["folder"], r"data.files: .*folder holds no .txt files")],
)  # fmt: skip
def test_a_missing_or_empty_corpus_is_refused_in_one_line(tmp_path, files, message):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "blank.txt").write_text("\n  \n")
    (tmp_path / "folder").mkdir()
    tokenizer = tmp_path / "tokenizer.json"
    tokenizer.write_text(TextTokenizer.train(["some words here"], 300).to_json())
    paths = [str(tmp_path / (name if name in ("nowhere", "folder") else f"{name}.txt")) for name in files]
    with pytest.raises(UserInputError, match=message):
        pretraining(tmp_path, files=paths, tokenizer=str(tokenizer)).prepare_data()


def masking_counts(masking: TokenMasking, ids: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    return masking(ids, torch.Generator().manual_seed(seed))


def test_bert_masking_chooses_15_percent_of_ordinary_tokens_then_80_10_10():
    special = [0, 1, 2, 3, 4]
    masking = TokenMasking(1000, special, mask_id=4)
    ids = torch.randint(5, 1000, (400, 128), generator=torch.Generator().manual_seed(0))
    ids[:, 0], ids[:, -1], ids[::2, 100:] = 2, 3, 0  # [CLS], [SEP], padding
    inputs, targets = masking_counts(masking, ids, 1)
    chosen = targets != -100
    ordinary = ~torch.isin(ids, torch.tensor(special))
    assert not chosen[~ordinary].any()  # never a special token, never padding
    assert torch.equal(targets[chosen], ids[chosen])
    share = chosen.sum() / ordinary.sum()
    assert 0.14 < share < 0.16
    masked = (inputs == 4) & chosen
    kept = (inputs == ids) & chosen
    randomised = chosen & ~masked & ~kept
    for part, expected in ((masked, 0.8), (randomised, 0.1 * 999 / 1000), (kept, 0.1)):
        assert abs(part.sum() / chosen.sum() - expected) < 0.015
    assert not torch.isin(inputs[randomised], torch.tensor(special)).any()
    unguarded, _ = masking_counts(TokenMasking(1000, [], mask_id=4), ids, 1)  # negative control: specials chosen
    assert (unguarded[~ordinary] != ids[~ordinary]).any()


def test_training_masks_are_drawn_the_same_after_a_state_dict_round_trip_and_validation_masks_never_change(corpus):
    data = pretraining(corpus)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    data.network_batch(batch, augment=True)  # the generator moves on
    state = data.state_dict()
    expected = data.network_batch(batch, augment=True)
    restored = pretraining(corpus)
    restored.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(restored.network_batch(batch, augment=True), expected, strict=True))
    fresh = pretraining(corpus).network_batch(batch, augment=True)  # negative control: another draw
    assert not torch.equal(fresh[1], expected[1])
    first, second = (list(data.val_dataloader()) for _ in range(2))
    for (ids, targets), (again_ids, again_targets) in zip(first, second, strict=True):
        assert torch.equal(ids, again_ids) and torch.equal(targets, again_targets) and (targets != -100).any()
        assert data.network_batch((ids, targets), augment=False)[1] is targets  # masked once, in the dataset


# -- runs ----------------------------------------------------------------------------------------------------------

EXACT_TEXT = """\
seed_everything: 7
trainer:
  max_epochs: 3
  log_every_n_steps: 2
  enable_progress_bar: false
  enable_model_summary: false
  logger:
    class_path: project.reports.tensorboard.RunLogger
    init_args: {save_dir: logs, log_graph: false}
  callbacks:
    - class_path: project.training.checkpoints.LastCheckpoint
      init_args: {every_n_train_steps: 4}
    - class_path: project.training.resume.ExactResume
model:
  network:
    class_path: project.networks.TextTransformer
    init_args: {vocab_size: 400, width: 32, depth: 1, heads: 2, max_length: 32, dropout: 0.1, per_token: PER_TOKEN}
  optimizer: {class_path: torch.optim.AdamW, init_args: {lr: 0.003}}
  lr_scheduler: {class_path: project.training.schedules.Linear, init_args: {warmup_fraction: 0.1}}
data:
  class_path: DATA
  init_args: {vocab_size: 300, max_length: 32, batch_size: BATCH, split: {val_size: 0.1, test_size: 0.1}}
"""


def fit_subprocess(folder: Path, args: list[str]) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "project", "fit", "--test_after_fit=false", *args]
    env = {**SUBPROCESS_ENV, "PROJECT_CACHE_DIR": os.environ["PROJECT_CACHE_DIR"]}
    return subprocess.run(command, cwd=folder, capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["corpus", "labelled"])
def test_a_text_run_killed_mid_epoch_resumes_bit_exact(tmp_path, kind):
    """3 epochs of 11 to 15 steps; killed at step 17 (last.ckpt at step 16, in epoch 2), resumed to the end: the same
    weights, optimizer and schedule as a run never stopped (masking, dropout and bucketed batches drawn as they
    were)."""
    if kind == "corpus":
        data, source = "project.data.TextCorpusDataModule", [f"--data.files={write_corpus(tmp_path / 'corpus')}"]
        config = EXACT_TEXT.replace("PER_TOKEN", "true").replace("BATCH", "16")
    else:
        texts = write_csv(tmp_path / "t.csv", labelled_rows(250))  # batches of similar length, as they were drawn
        data, source = "project.data.TextDataModule", [f"--data.train={texts}", "--data.bucket_window=3"]
        config = EXACT_TEXT.replace("PER_TOKEN", "false").replace("BATCH", "20")
    (tmp_path / "exact_text.yaml").write_text(config.replace("DATA", data))
    args = [f"--config={tmp_path / 'exact_text.yaml'}", *source]
    run = Path("logs") / "exact_text" / "version_0" / "checkpoints" / "last.ckpt"
    for name in ("straight", "killed"):
        (tmp_path / name).mkdir()
    assert fit_subprocess(tmp_path / "straight", args).returncode == 0
    kill = ["--trust=helpers", "--trainer.callbacks+=helpers.KillAtStep", "--trainer.callbacks.step=17"]
    assert fit_subprocess(tmp_path / "killed", [*args, *kill]).returncode == -9
    stopped = torch.load(tmp_path / "killed" / run, weights_only=True)
    assert (stopped["epoch"], stopped["global_step"]) == (1, 16)
    if kind == "corpus":  # negative control: the masking generator's state forgotten, the run masks otherwise
        shutil.copytree(tmp_path / "killed", tmp_path / "forgotten")
        stopped["TextCorpusDataModule"]["mask_generator"] = torch.Generator().manual_seed(1).get_state()
        torch.save(stopped, tmp_path / "forgotten" / run)
        assert fit_subprocess(tmp_path / "forgotten", [*args, "--ckpt_path=last"]).returncode == 0
        with pytest.raises(AssertionError, match="weights differ"):
            assert_same_training_state(tmp_path / "straight" / run, tmp_path / "forgotten" / run)
    result = fit_subprocess(tmp_path / "killed", [*args, "--ckpt_path=last"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_training_state(tmp_path / "straight" / run, tmp_path / "killed" / run)


@pytest.mark.slow
def test_the_readme_commands_pretrain_then_fine_tune_with_the_pretrained_tokenizer(tmp_path):
    """``fit --config pretrain_text --data.files corpus/``, then ``fit --config text --data.train texts.csv`` from its
    checkpoint and tokenizer; a fine-tune with another tokenizer is refused in one line before it trains."""
    write_corpus(tmp_path / "corpus")
    write_csv(tmp_path / "texts.csv", labelled_rows(200))
    short = [*TINY_NETWORK, *QUIET, "--trainer.max_steps=12", "--trainer.logger.init_args.log_graph=false"]
    result = fit_subprocess(tmp_path, ["--config", "pretrain_text", "--data.files", "corpus/", *short])
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoint = "logs/pretrain_text/version_0/checkpoints/last.ckpt"
    assert torch.load(tmp_path / checkpoint, weights_only=True)["preprocessing"]["tokenizer"]
    finetune = ["--config", "text", "--data.train", "texts.csv", "--model.finetuning.pretrained", checkpoint, *short]
    result = fit_subprocess(tmp_path, [*finetune, "--data.tokenizer", checkpoint])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Loaded" in result.stdout + result.stderr and (tmp_path / "logs" / "text" / "version_0").is_dir()
    refused = fit_subprocess(tmp_path, finetune)  # the data's own tokenizer, trained on texts.csv
    assert refused.returncode == 2
    assert "was trained with another tokenizer" in refused.stderr and "--data.tokenizer" in refused.stderr
    assert not (tmp_path / "logs" / "text" / "version_1").exists()


def test_a_fine_tune_with_another_tokenizer_than_the_pretrained_checkpoints_is_refused(tmp_path):
    from project.training.finetuning import check_pretrained_tokenizer

    words = [text for text, _ in labelled_rows(50)]
    ours, theirs = (TextTokenizer.train(words, size).to_json() for size in (300, 200))
    torch.save({"state_dict": {}, "preprocessing": {"tokenizer": theirs}}, tmp_path / "pretrained.ckpt")
    with pytest.raises(UserInputError, match=r"pretrained.ckpt was trained with another tokenizer .*--data.tokenizer"):
        check_pretrained_tokenizer(tmp_path / "pretrained.ckpt", ours)
    check_pretrained_tokenizer(tmp_path / "pretrained.ckpt", theirs)  # its own: taken
    torch.save({"backbone.weight": torch.zeros(1)}, tmp_path / "weights.pt")
    check_pretrained_tokenizer(tmp_path / "weights.pt", ours)  # weights alone record no tokenizer


def test_the_text_recipe_trains_a_classifier_from_scratch_and_evaluates_it_with_its_tokenizer(
    tmp_path, run_dir, monkeypatch
):
    from project.cli import run_cli

    monkeypatch.setenv("PROJECT_CACHE_DIR", str(tmp_path / "cache"))  # where fit keeps the tokenizer it trains
    write_csv(tmp_path / "texts.csv", labelled_rows(120))
    short = [*TINY_NETWORK, *QUIET, "--trainer.max_steps=4", "--trainer.logger.init_args.log_graph=false"]
    cli = run_cli(["fit", "--config", "text", "--data.train", str(tmp_path / "texts.csv"), *short])
    assert cli.trainer.global_step == 4 and "test/acc" in cli.trainer.callback_metrics
    checkpoint = torch.load(run_dir / "logs" / "text" / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["preprocessing"]["class_names"] == ["food", "music", "sport"]
    assert checkpoint["hyper_parameters"]["network"]["init_args"]["num_outputs"] == 3
    # evaluate takes the tokenizer the checkpoint records: never one trained again (another vocabulary), even with the
    # cache where fit kept the trained one gone.
    from project.inference.evaluation import evaluate_checkpoint

    shutil.rmtree(tmp_path / "cache")
    monkeypatch.setattr(TextTokenizer, "train", lambda *args, **kwargs: pytest.fail("a tokenizer trained again"))
    evaluate_checkpoint(run_dir / "logs" / "text" / "version_0" / "checkpoints" / "last.ckpt")
    (report,) = (run_dir / "logs" / "text" / "version_0" / "evaluation").glob("*/metrics.json")
    assert json.loads(report.read_text())["class_names"] == ["food", "music", "sport"]
