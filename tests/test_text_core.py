"""The text core: the tokenizer, the small transformer encoder and the masked-language-model task."""

from __future__ import annotations

import json
import random

import pytest
import torch

from project.data.tokenizer import PAD_ID, SPECIAL_TOKENS, TextTokenizer
from project.errors import UserInputError
from project.networks import ConvNet, TextTransformer, check_input
from project.tasks import TASKS, MaskedTokens
from project.tasks.masked_tokens import IGNORED
from project.training.specs import metric_class

WORDS = ["alpha", "beta", "gamma", "delta", "tensor", "network", "train", "model", "data", "layer", "token", "vector"]


def generated_texts(count: int = 300, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 15))) for _ in range(count)]


@pytest.fixture(scope="module")
def tokenizer() -> TextTokenizer:
    return TextTokenizer.train(generated_texts(), vocab_size=120)


def test_a_trained_tokenizer_starts_with_the_special_tokens_and_pads_with_zero(tokenizer):
    vocabulary = tokenizer.tokenizer.get_vocab()
    assert [vocabulary[token] for token in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    assert tokenizer.pad_id == PAD_ID == 0
    ids = tokenizer.encode(["alpha beta", "gamma delta tensor network"], max_length=32)
    assert [sequence[0] for sequence in ids] == [tokenizer.cls_id] * 2
    assert [sequence[-1] for sequence in ids] == [tokenizer.sep_id] * 2
    batch = tokenizer.pad(ids)
    assert batch.shape == (2, max(len(sequence) for sequence in ids))  # to the longest, not to max_length
    assert batch[0, len(ids[0]) :].eq(0).all() and batch[1].ne(0).all()
    assert tokenizer.decode(batch[0]) == "alpha beta"


def test_long_texts_are_cut_to_max_length_keeping_the_separator_last(tokenizer):
    (ids,) = tokenizer.encode([" ".join(WORDS * 3)], max_length=10)
    assert len(ids) == 10 and ids[0] == tokenizer.cls_id and ids[-1] == tokenizer.sep_id
    (short,) = tokenizer.encode(["alpha"], max_length=10)
    assert len(short) == 3  # the control: a short text is not padded or cut


def test_a_tokenizer_round_trips_through_json_and_a_file_with_the_same_fingerprint(tokenizer, tmp_path):
    again = TextTokenizer.from_json(tokenizer.to_json())
    assert again.fingerprint == tokenizer.fingerprint
    (tmp_path / "tokenizer.json").write_text(tokenizer.to_json())
    assert TextTokenizer.read(tmp_path).fingerprint == tokenizer.fingerprint  # a folder holding tokenizer.json
    other = TextTokenizer.train(generated_texts(seed=1)[:50], vocab_size=60)
    assert other.fingerprint != tokenizer.fingerprint


def test_a_bert_vocab_txt_folder_is_read_as_bert_wordpiece(tmp_path):
    (tmp_path / "vocab.txt").write_text("\n".join([*SPECIAL_TOKENS, "alpha", "beta", "##s"]))
    tokenizer = TextTokenizer.read(tmp_path)
    assert tokenizer.encode(["Alphas beta zeta"], 10) == [[2, 5, 7, 6, 1, 3]]  # lowercased, ## pieces, [UNK]


def test_tokenizers_the_project_cannot_batch_with_are_refused_in_one_line(tmp_path, tokenizer):
    (tmp_path / "vocab.txt").write_text("\n".join(["[UNK]", "[PAD]", "[CLS]", "[SEP]", "[MASK]", "alpha"]))
    with pytest.raises(UserInputError, match=r"\[PAD\] is id 1"):
        TextTokenizer.read(tmp_path)
    document = json.loads(tokenizer.to_json())
    del document["model"]["vocab"]["[MASK]"]
    document["added_tokens"] = [token for token in document["added_tokens"] if token["content"] != "[MASK]"]
    with pytest.raises(UserInputError, match=r"no \[MASK\] token"):
        TextTokenizer.from_json(json.dumps(document))
    with pytest.raises(UserInputError, match="not a tokenizer"):
        TextTokenizer.from_json('{"version": "1.0"}')
    with pytest.raises(UserInputError, match=r"neither a tokenizer\.json"):
        TextTokenizer.read(tmp_path / "missing")


def small_encoder(**options) -> TextTransformer:
    return TextTransformer(**{"vocab_size": 120, "width": 32, "depth": 2, "heads": 2, "max_length": 32, **options})


def test_padding_does_not_change_what_the_encoder_says_of_a_text(tokenizer):
    torch.manual_seed(0)
    network = small_encoder(num_outputs=3).eval()
    short, long = tokenizer.encode(["alpha beta", "gamma delta tensor network model data"], 32)
    alone = network(torch.tensor([short]))
    padded = network(tokenizer.pad([short, long]))[:1]
    torch.testing.assert_close(padded, alone, rtol=0, atol=1e-5)
    # The control: the same ids with padding not masked (as if it were a token) give other outputs.
    unmasked = network.head(network.backbone.norm(network.backbone(tokenizer.pad([short, long]))).mean(dim=1))[:1]
    assert (unmasked - alone).abs().max() > 1e-3


def test_a_pretraining_encoder_and_a_classifier_share_their_backbone_keys():
    pretraining = small_encoder(num_outputs=120, per_token=True)
    classifier = small_encoder(num_outputs=4)
    ids = torch.tensor([[2, 7, 8, 3], [2, 9, 3, 0]])
    assert pretraining(ids).shape == (2, 4, 120) and classifier(ids).shape == (2, 4)
    backbone = {key for key in pretraining.state_dict() if key.startswith("backbone.")}
    assert backbone == {key for key in classifier.state_dict() if key.startswith("backbone.")}
    assert {key for key in pretraining.state_dict()} - backbone == {"head.weight", "head.bias"}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"width": 30, "heads": 4}, "must divide by heads"),
        ({"depth": 0}, "depth must be a positive integer"),
        ({"dropout": 1.0}, "dropout must be in"),
    ],
)
def test_sizes_an_encoder_cannot_have_are_refused(options, message):
    with pytest.raises(UserInputError, match=message):
        small_encoder(**options)


def test_a_network_must_take_its_datas_input():
    text, image = small_encoder(), ConvNet()
    check_input(text, 100, 32, None)
    check_input(image, 0, 0, (1, 28, 28))
    with pytest.raises(UserInputError, match="makes 500 token ids and the network embeds 120"):
        check_input(text, 500, 32, None)
    with pytest.raises(UserInputError, match=r"data\.max_length is 64 and the network takes 32 tokens at most"):
        check_input(text, 100, 64, None)
    with pytest.raises(UserInputError, match="takes token ids, and the data gives images"):
        check_input(text, 0, 0, (1, 28, 28))
    with pytest.raises(UserInputError, match="takes images: choose a text network"):
        check_input(image, 100, 32, None)
    assert text.example_input().dtype == torch.long and image.example_input().shape == (1, 1, 28, 28)


def test_masked_tokens_count_only_the_masked_positions():
    task = MaskedTokens().bind(10, metric_class)
    assert TASKS["masked_tokens"] is MaskedTokens
    outputs = torch.zeros(2, 3, 10)
    outputs[0, 1, 4] = 5.0  # sure of token 4 at the one masked position of the first text
    targets = torch.full((2, 3), IGNORED)
    targets[0, 1] = 4
    metrics = task.metric_collection()
    metrics.update(task.scores(outputs), targets)
    values = metrics.compute()
    assert values["acc"] == 1.0
    expected = torch.nn.functional.cross_entropy(outputs[0, 1:2], torch.tensor([4]))
    torch.testing.assert_close(task.loss(outputs, targets), expected)
    torch.testing.assert_close(values["perplexity"], expected.exp())
    # The control: a wrong guess at a masked position counts; unmasked positions never do.
    targets[1, 2] = 7
    metrics.reset()
    metrics.update(task.scores(outputs), targets)
    assert metrics.compute()["acc"] == 0.5
    assert task.loss(outputs, torch.full((2, 3), -100)).item() == 0.0  # no masked token: 0, not NaN


def test_an_image_layout_for_a_text_network_is_refused():
    from project.training import TaskModule
    from project.training.speed import Speed

    with pytest.raises(UserInputError, match="channels_last lays out images"):
        TaskModule(small_encoder(), speed=Speed(channels_last=True))
    TaskModule(small_encoder(), speed=Speed(channels_last=False))  # the control
