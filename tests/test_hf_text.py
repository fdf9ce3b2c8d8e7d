"""BERT-family models from Hugging Face behind the Network contract (project.networks.hf_text), built offline from a
tiny BERT saved in the test, and the fine-tuning pieces (LoRA, frozen epochs, backbone learning rate, schedules, EMA,
checkpoints) on text networks."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers import BackboneSnapshots, module_with_task, quiet_trainer
from test_library_security import custom_code_folder
from test_security import CreatesFile
from torch.utils.data import DataLoader, TensorDataset

from project.errors import UserInputError
from project.networks import HuggingFaceText, TextTransformer
from project.networks.lora import LoRA
from project.training import TaskModule
from project.training.averaging import EMAWeights, averaged_weights
from project.training.finetuning import FineTuning
from project.training.schedules import Linear

transformers = pytest.importorskip("transformers")

VOCAB = 120
TINY_BERT = {
    "vocab_size": VOCAB,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 64,
}


def save_bert(folder: Path, seed: int = 0, **changes: object) -> Path:
    """A tiny BERT (random weights) saved as a hub download leaves it: config.json and model.safetensors."""
    torch.manual_seed(seed)
    transformers.BertModel(transformers.BertConfig(**{**TINY_BERT, **changes})).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory) -> Path:
    return save_bert(tmp_path_factory.mktemp("tiny-bert"))


def texts(count: int = 32, length: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (count, length) as text batches are: [CLS]=2 first, [SEP]=3 last, padded with 0 to ``length``; the
    label is whether the first word's id is even (learnable from the first tokens)."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.zeros(count, length, dtype=torch.long)
    for row, size in enumerate(torch.randint(4, length + 1, (count,), generator=generator).tolist()):
        ids[row, :size] = torch.randint(5, VOCAB, (size,), generator=generator)
        ids[row, 0], ids[row, size - 1] = 2, 3
    return ids, ids[:, 1] % 2


class TextBatches(L.LightningDataModule):
    """Labelled token-id batches, the same for training and validation (until the project's text data modules)."""

    def __init__(self, batch_size: int = 8) -> None:
        super().__init__()
        self.dataset, self.batch_size = TensorDataset(*texts()), batch_size

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset, batch_size=self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset, batch_size=self.batch_size)


def fit(module: TaskModule, epochs: int = 1, **trainer_options: object) -> TaskModule:
    quiet_trainer(max_epochs=epochs, limit_val_batches=0, **trainer_options).fit(module, TextBatches())
    return module


def outputs(module: TaskModule, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return module.eval()(ids)


# -- the network ---------------------------------------------------------------------------------------------------


def test_a_bert_from_its_folder_gives_outputs_per_text_or_per_token_and_its_vocabulary(bert_folder):
    network = HuggingFaceText(str(bert_folder), num_outputs=3)
    ids, _ = texts(4)
    assert network(ids).shape == (4, 3)
    assert network(network.example_input()).shape == (1, 3)
    assert network.vocab_size == VOCAB and network.config == {
        "model": str(bert_folder),
        "num_outputs": 3,
        "weights": "pretrained",
        "per_token": False,
        "dropout": 0.1,
    }
    masked_lm = HuggingFaceText(str(bert_folder), num_outputs=VOCAB, weights=None, per_token=True)
    assert masked_lm(ids).shape == (4, 12, VOCAB)
    assert set(masked_lm.backbone.state_dict()) == set(network.backbone.state_dict())  # pretraining -> classifier
    assert not any(name.startswith("pooler.") for name in network.backbone.state_dict())  # the first token's vector


def test_pretrained_weights_are_the_folders_and_null_is_a_random_start(bert_folder):
    saved = transformers.BertModel.from_pretrained(bert_folder).state_dict()
    loaded = HuggingFaceText(str(bert_folder), weights="pretrained").backbone.state_dict()
    assert all(torch.equal(loaded[name], saved[name]) for name in loaded)
    assert all(layer.training for layer in HuggingFaceText(str(bert_folder)).modules())  # dropout on in training
    random = HuggingFaceText(str(bert_folder), weights=None).backbone.state_dict()
    assert not torch.equal(random["embeddings.word_embeddings.weight"], saved["embeddings.word_embeddings.weight"])


def test_padding_does_not_change_what_the_network_says_of_a_text(bert_folder):
    network = HuggingFaceText(str(bert_folder), num_outputs=3).eval()
    text = torch.tensor([[2, 17, 42, 9, 3]])
    padded = torch.cat([text, torch.zeros(1, 6, dtype=torch.long)], dim=1)
    with torch.no_grad():
        assert torch.allclose(network(text), network(padded), atol=1e-5)
        # The negative control: the same model attending to the padding (no mask) says something else.
        unmasked = network.head(network.backbone(input_ids=padded).last_hidden_state[:, 0])
        assert (network(text) - unmasked).abs().max() > 20 * 1e-5
    per_token = HuggingFaceText(str(bert_folder), num_outputs=VOCAB, per_token=True).eval()
    with torch.no_grad():
        assert torch.allclose(per_token(text), per_token(padded)[:, :5], atol=1e-5)


def test_a_model_that_pads_with_another_id_or_is_too_short_for_the_texts_is_refused_in_one_line(tmp_path):
    folder = tmp_path / "roberta-like"
    transformers.RobertaModel(transformers.RobertaConfig(**TINY_BERT, pad_token_id=1)).save_pretrained(folder)
    with pytest.raises(UserInputError, match=r"pads with token id 1, and text batches pad with 0") as refused:
        HuggingFaceText(str(folder))
    assert "\n" not in str(refused.value)
    network = HuggingFaceText(str(save_bert(tmp_path / "short", max_position_embeddings=8)))
    network(torch.ones(1, 8, dtype=torch.long))  # the control: as long as the model takes
    with pytest.raises(UserInputError, match=r"texts of 9 tokens, .* takes at most 8: set data.max_length to 8"):
        network(torch.ones(1, 9, dtype=torch.long))


def test_a_folder_with_code_of_its_own_is_refused_and_its_code_never_runs(tmp_path):
    marker = tmp_path / "ran"
    folder = custom_code_folder(tmp_path / "evil-model", marker)
    for weights in ("pretrained", None):
        with pytest.raises(UserInputError, match=r"needs code of its own .* which this project never runs"):
            HuggingFaceText(str(folder), weights=weights)
    assert not marker.exists()


def test_a_bert_folder_that_also_names_code_of_its_own_is_built_by_transformers_own_bert(tmp_path):
    marker = tmp_path / "ran"
    evil = custom_code_folder(tmp_path / "evil-model", marker)
    folder = save_bert(tmp_path / "bert")
    config = json.loads((folder / "config.json").read_text())
    auto_map = {"AutoConfig": "configuration_evil.EvilConfig", "AutoModel": "modeling_evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps({**config, "auto_map": auto_map}))
    for name in ("configuration_evil.py", "modeling_evil.py"):
        (folder / name).write_text((evil / name).read_text())
    network = HuggingFaceText(str(folder))
    assert type(network.backbone) is transformers.BertModel
    assert not marker.exists()


def test_pickle_weights_are_never_read(tmp_path):
    marker = tmp_path / "ran"
    folder = save_bert(tmp_path / "pickled")
    (folder / "model.safetensors").unlink()
    torch.save({"embeddings.word_embeddings.weight": CreatesFile(marker)}, folder / "pytorch_model.bin")
    with pytest.raises(UserInputError, match=r"pickle weights only \(pytorch_model.bin\), which this project never"):
        HuggingFaceText(str(folder))
    assert not marker.exists()
    assert HuggingFaceText(str(folder), weights=None).vocab_size == VOCAB  # the control: its config alone is read


def test_weights_and_dropout_outside_what_is_allowed_are_refused_by_name(bert_folder):
    with pytest.raises(UserInputError, match=r"weights must be pretrained or null, got 'library'"):
        HuggingFaceText(str(bert_folder), weights="library")
    with pytest.raises(UserInputError, match=r"dropout must lie in \[0, 1\), got 1.5"):
        HuggingFaceText(str(bert_folder), dropout=1.5)


# -- fine-tuning pieces on text networks ---------------------------------------------------------------------------


def test_a_fine_tuned_bert_checkpoint_reloads_offline_from_its_own_weights(bert_folder, tmp_path, monkeypatch):
    from huggingface_hub import constants

    module = fit(module_with_task(HuggingFaceText(str(bert_folder), num_outputs=2), "multiclass"))
    path = tmp_path / "fine-tuned.ckpt"
    module.trainer.save_checkpoint(path)
    assert torch.load(path, weights_only=True)["hyper_parameters"]["network"]["init_args"]["weights"] is None
    offline = []
    read_config = transformers.AutoConfig.from_pretrained

    def recording(*args: object, **kwargs: object) -> object:
        offline.append(constants.HF_HUB_OFFLINE)
        return read_config(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", recording)
    moved = tmp_path / "config-only"  # the folder's weights are not read: the checkpoint holds them
    moved.mkdir()
    (moved / "config.json").write_text((bert_folder / "config.json").read_text())
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["hyper_parameters"]["network"]["init_args"]["model"] = str(moved)
    torch.save(checkpoint, path)
    loaded = TaskModule.load_from_checkpoint(path)
    assert offline == [True]  # built with the Hub offline
    ids, _ = texts(6, seed=1)
    assert torch.allclose(outputs(loaded, ids), outputs(module, ids), atol=1e-6)


def test_a_bert_pretrained_here_by_masked_tokens_carries_its_backbone_into_a_classifier(bert_folder, tmp_path):
    ids, _ = texts()
    targets = torch.where(torch.rand(ids.shape, generator=torch.Generator().manual_seed(0)) < 0.15, ids, -100)
    masked = torch.where(targets >= 0, 4, ids)  # [MASK] where a target is
    data = L.LightningDataModule.from_datasets(TensorDataset(masked, targets), batch_size=8)
    network = HuggingFaceText(str(bert_folder), num_outputs=VOCAB, weights=None, per_token=True)
    module = module_with_task(network, "masked_tokens", optimizer=functools.partial(torch.optim.AdamW, lr=1e-3))
    quiet_trainer(max_epochs=1).fit(module, data)
    path = tmp_path / "pretrained.ckpt"
    module.trainer.save_checkpoint(path)
    classifier = HuggingFaceText(str(bert_folder), num_outputs=2, weights=None)
    assert not torch.equal(classifier.backbone.embeddings.word_embeddings.weight,
                           network.backbone.embeddings.word_embeddings.weight)  # fmt: skip
    TaskModule(classifier, finetuning=FineTuning(str(path))).load_pretrained()
    learned = network.backbone.state_dict()
    assert all(torch.equal(weight, learned[name]) for name, weight in classifier.backbone.state_dict().items())


def test_lora_on_bert_trains_only_its_attention_and_feed_forward_adapters_and_the_head(bert_folder, tmp_path):
    module = module_with_task(HuggingFaceText(str(bert_folder), num_outputs=2), "multiclass", lora=LoRA(rank=2))
    parameters = dict(module.network.named_parameters())
    trained = {name for name, parameter in parameters.items() if parameter.requires_grad}
    assert trained and all("lora_" in name or name.startswith("head.") for name in trained)
    adapted = {name.split(".lora_")[0].rsplit(".", 1)[-1] for name in trained if "lora_" in name}
    assert adapted == {"query", "key", "value", "dense"}  # attention, its output and the feed-forward layers
    frozen = {name: parameter.detach().clone() for name, parameter in parameters.items() if name not in trained}
    fit(module)
    assert all(torch.equal(parameters[name], weight) for name, weight in frozen.items())
    assert any(parameters[name].abs().sum() > 0 for name in trained if "lora_B" in name)
    path = tmp_path / "lora.ckpt"
    module.trainer.save_checkpoint(path)
    ids, _ = texts(6, seed=1)
    assert torch.allclose(outputs(TaskModule.load_from_checkpoint(path), ids), outputs(module, ids), atol=1e-6)


def small_text_transformer(**options: object) -> TextTransformer:
    sizes = {"vocab_size": VOCAB, "width": 32, "depth": 1, "heads": 2, "max_length": 16, **options}
    return TextTransformer(**sizes)


@pytest.mark.parametrize("kind", ["bert", "text_transformer"])
def test_a_frozen_backbone_stays_put_then_trains_at_its_own_rate_with_a_warm_up_and_ema(kind, bert_folder, tmp_path):
    snapshots = BackboneSnapshots()
    network = HuggingFaceText(str(bert_folder), num_outputs=2) if kind == "bert" else small_text_transformer()
    start = {name: weight.clone() for name, weight in network.backbone.state_dict().items()}
    module = module_with_task(
        network,
        "multiclass",
        optimizer=functools.partial(torch.optim.AdamW, lr=1e-3),
        lr_scheduler=functools.partial(Linear, warmup_fraction=0.25),
        finetuning=FineTuning(freeze_backbone_epochs=1, backbone_lr=1e-4),
    )
    fit(module, epochs=2, callbacks=[snapshots, EMAWeights(decay=0.5)])
    frozen, unfrozen = snapshots.backbone
    assert all(torch.equal(frozen[name], start[name]) for name in start)
    assert any(not torch.equal(unfrozen[name], start[name]) for name in start)
    assert not torch.equal(snapshots.head[0]["weight"], snapshots.head[1]["weight"])
    initial = {group["name"]: group["initial_lr"] for group in module.trainer.optimizers[0].param_groups}
    assert initial == {"backbone": pytest.approx(1e-4), "head": pytest.approx(1e-3)}
    module.trainer.save_checkpoint(tmp_path / "ema.ckpt")
    assert averaged_weights(torch.load(tmp_path / "ema.ckpt", weights_only=True))["method"] == "ema"


def test_lora_on_the_text_transformer_trains_adapters_that_act_in_evaluation_too(tmp_path):
    """torch's fused encoder layer reads its weights itself in evaluation, past any adapter on them: the encoder's
    layers are ones the network calls."""
    torch.manual_seed(0)
    base = tmp_path / "base.pt"  # the pretrained encoder (a checkpoint rebuilds the base from it)
    torch.save(small_text_transformer(dropout=0.0).state_dict(), base)
    tuning = FineTuning(str(base))
    module = module_with_task(small_text_transformer(dropout=0.0), "multiclass", lora=LoRA(rank=2), finetuning=tuning)
    parameters = dict(module.network.named_parameters())
    trained = {name for name, parameter in parameters.items() if parameter.requires_grad}
    assert trained and all("lora_" in name or name.startswith("head.") for name in trained)
    adapted = {name.split(".lora_")[0].rsplit(".", 1)[-1] for name in trained if "lora_" in name}
    assert adapted == {"query", "key", "value", "output", "linear1", "linear2"}
    fit(module)
    assert any(parameters[name].abs().sum() > 0 for name in trained if "lora_B" in name)
    ids, _ = texts(4, length=12)
    with torch.no_grad():
        assert torch.allclose(outputs(module, ids), module.train()(ids), atol=1e-5)  # no dropout: the same
    path = tmp_path / "lora.ckpt"
    module.trainer.save_checkpoint(path)
    assert torch.allclose(outputs(TaskModule.load_from_checkpoint(path), ids), outputs(module, ids), atol=1e-6)


def test_lora_puts_no_adapter_inside_torchs_fused_transformer_layers():
    """They read their linear layers' weights themselves (attention's out_proj always, the encoder layer's
    feed-forward in evaluation): an adapter there would train and then be ignored."""
    from project.networks import AdaptedNetwork
    from project.networks.lora import add_adapters

    layer = torch.nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)
    encoder = torch.nn.Sequential(torch.nn.TransformerEncoder(layer, 1), torch.nn.Linear(16, 2))
    fused = AdaptedNetwork(encoder, "1", num_outputs=2, in_channels=1, image_size=28)
    with pytest.raises(UserInputError, match=r"no nn.Linear or nn.Conv2d layer to adapt \(those inside torch's"):
        add_adapters(fused, LoRA(rank=2))
    plain = TextTransformer(vocab_size=VOCAB, width=16, depth=1, heads=2, max_length=16)  # the control
    add_adapters(plain, LoRA(rank=2))
    assert any("lora_" in name for name, _ in plain.named_parameters())
