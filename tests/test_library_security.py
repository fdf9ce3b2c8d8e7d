"""What a model library reads for us is data too: a pickle planted in torch's hub cache never runs, and a Hugging Face
folder with code of its own is refused without a prompt. Each payload would create a marker file if it ran."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import cli_error
from test_library_networks import library_args
from test_security import CreatesFile

from project.cli import run_cli
from project.errors import UserInputError
from project.files.weights import hub_file, weights_only_loads

MOBILENET_FILE = "mobilenet_v3_small-047dcff4.pth"
"""The file torchvision's MobileNet_V3_Small_Weights.DEFAULT reads from the hub cache (the hash in its name)."""


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    """An empty ``$TORCH_HOME``: torch.hub's cache is ``$TORCH_HOME/hub/checkpoints``."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    (home / "hub" / "checkpoints").mkdir(parents=True)
    return home


def plant_pickle(path: Path, marker: Path) -> Path:
    """A file that runs code when unpickled without the plain-data check: it creates ``marker``."""
    torch.save({"features.0.0.weight": CreatesFile(marker)}, path)
    return path


def test_a_pickle_planted_in_the_hub_cache_never_runs_when_fit_takes_the_librarys_weights(
    torch_home, image_folder, run_dir, tmp_path, capsys
):
    marker = tmp_path / "ran"
    plant_pickle(torch_home / "hub" / "checkpoints" / MOBILENET_FILE, marker)
    args = ["fit", *library_args(image_folder, "torchvision", "mobilenet_v3_small", "library")]
    message = cli_error(args, capsys, root=run_dir)
    assert not marker.exists()
    assert f"{MOBILENET_FILE} is not the library's weight file: its SHA-256 does not start with 047dcff4" in message
    assert "delete it, and it is downloaded again" in message


def test_a_received_lora_checkpoint_naming_the_librarys_weights_never_runs_a_planted_pickle(
    torch_home, image_folder, run_dir, tmp_path, mobilenet_weights
):
    """LoRA checkpoints rebuild their base from the network's ``weights``: a checkpoint naming ``library`` makes
    prediction, evaluation and export read the hub cache."""
    from project.inference.evaluation import evaluate_checkpoint
    from project.inference.export import export_checkpoint
    from project.inference.prediction import Predictor

    args = ["fit", *library_args(image_folder, "torchvision", "mobilenet_v3_small", mobilenet_weights)]
    run_cli([*args, "--config=lora", "--model.lora.rank=4", "--test_after_fit=false", "--trainer.max_epochs=1"])
    last = run_dir / "logs" / "finetune_library" / "version_0" / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    checkpoint["hyper_parameters"]["network"]["init_args"]["weights"] = "library"  # plain data: as received
    received = tmp_path / "received.ckpt"
    torch.save(checkpoint, received)
    marker = tmp_path / "ran"
    plant_pickle(torch_home / "hub" / "checkpoints" / MOBILENET_FILE, marker)
    loads = {
        "predict": lambda: Predictor.load(received),
        "evaluate": lambda: evaluate_checkpoint(received, "test", None, tmp_path / "report"),
        "export": lambda: export_checkpoint(received, tmp_path / "exported"),
    }
    for name, load in loads.items():
        with pytest.raises(UserInputError, match="is not the library's weight file"):
            load()
        assert not marker.exists(), name
    assert not (tmp_path / "report").exists() and not (tmp_path / "exported").exists()


def test_a_pickle_whose_hash_matches_its_name_still_never_runs(torch_home, tmp_path):
    """The hash in the name has only 8 hex digits (a second file with the same prefix can be made); the loads a
    library makes while it builds a model are plain-data loads anyway."""
    marker = tmp_path / "ran"
    payload = plant_pickle(tmp_path / "payload.pth", marker)
    prefix = hashlib.sha256(payload.read_bytes()).hexdigest()[:8]
    cached = torch_home / "hub" / "checkpoints" / f"model-{prefix}.pth"
    payload.rename(cached)
    assert hub_file(f"https://example.invalid/models/model-{prefix}.pth") == cached  # passes the hash check
    with weights_only_loads(), pytest.raises(Exception, match="Weights only load failed"):
        torch.hub.load_state_dict_from_url(f"https://example.invalid/models/model-{prefix}.pth", weights_only=False)
    assert not marker.exists()


def test_weights_only_loads_leave_the_environment_as_they_found_it(monkeypatch):
    import os

    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    monkeypatch.delenv("TORCH_FORCE_WEIGHTS_ONLY_LOAD", raising=False)
    with weights_only_loads():
        assert os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] == "1"
        assert "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD" not in os.environ  # torch refuses to load with both set
    assert os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] == "1"
    assert "TORCH_FORCE_WEIGHTS_ONLY_LOAD" not in os.environ


def test_library_weights_that_cannot_be_downloaded_say_where_to_put_the_file(torch_home):
    url = "https://example.invalid/models/tiny-0123abcd.pth"
    with pytest.raises(UserInputError, match=r"could not be downloaded .*put the file at .*tiny-0123abcd\.pth"):
        hub_file(url)


def custom_code_folder(folder: Path, marker: Path) -> Path:
    """A Hugging Face model folder whose config names modelling code of its own (``auto_map``), as a hub repository
    with ``trust_remote_code`` models has it; importing that code creates ``marker``."""
    folder.mkdir(parents=True)
    config = {"model_type": "evilnet", "auto_map": {"AutoConfig": "configuration_evil.EvilConfig",
                                                    "AutoModel": "modeling_evil.EvilModel"}}  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config))
    code = f"from pathlib import Path\nPath({str(marker)!r}).touch()\nfrom transformers import PretrainedConfig\n"
    config_class = "class EvilConfig(PretrainedConfig):\n    model_type = 'evilnet'\n"
    (folder / "configuration_evil.py").write_text(code + config_class)
    (folder / "modeling_evil.py").write_text(code)
    return folder


def test_a_hugging_face_folder_with_code_of_its_own_is_refused_even_when_the_user_would_say_yes(tmp_path):
    pytest.importorskip("transformers")
    marker = tmp_path / "ran"
    folder = custom_code_folder(tmp_path / "evil-model", marker)
    build = (
        "from project.errors import UserInputError\nfrom project.networks.library import LibraryNetwork\n"
        f"try:\n    LibraryNetwork('huggingface', {str(folder)!r}, num_outputs=2, weights='library')\n"
        "except UserInputError as error:\n    print(f'error: {error}')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", build], input="y\ny\n", capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert not marker.exists()
    assert "Do you wish to run the custom code" not in result.stdout + result.stderr  # never asked
    assert "needs code of its own (custom modelling files), which this project never runs" in result.stdout


def test_fit_on_a_hugging_face_folder_with_code_of_its_own_is_one_error_line(quick_args, run_dir, tmp_path, capsys):
    pytest.importorskip("transformers")
    marker = tmp_path / "ran"
    folder = custom_code_folder(tmp_path / "evil-model", marker)
    args = ["--model.network=project.networks.library.LibraryNetwork", "--model.network.init_args.library=huggingface",
            f"--model.network.init_args.name={folder}", "--model.network.init_args.in_channels=1",
            "--model.network.init_args.image_size=28"]  # fmt: skip
    message = cli_error(["fit", *quick_args, *args], capsys, root=run_dir)
    assert "needs code of its own" in message
    assert not marker.exists()
