"""The notebook runs top to bottom against a checkpoint of a real (short) run."""

import json
from pathlib import Path

from project.cli import run_cli

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "inspect_model.ipynb"


def test_inspect_model_notebook_runs(quick_args, fake_data_dir, run_dir, monkeypatch, capsys):
    run_cli(["fit", *quick_args, "--trainer.max_epochs=1", "--test_after_fit=false"])
    monkeypatch.setenv("PROJECT_DATA_DIR", str(fake_data_dir))
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    code = "\n\n".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "code")
    exec(compile(code, str(NOTEBOOK), "exec"), {})
    output = capsys.readouterr().out
    assert "test accuracy:" in output and "on 200 images" in output
