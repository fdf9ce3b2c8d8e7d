"""The notebooks run top to bottom through a real Jupyter kernel (nbclient), and are committed without outputs."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from project.cli import run_cli

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def execute(name: str, folder: Path) -> list[dict]:
    """Run the notebook in ``folder`` (its working directory) and return the outputs of its code cells."""
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(folder)}})
    client.execute()
    return [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]


def notebooks_folder(root: Path) -> Path:
    """``root`` laid out as a clone (a ``pyproject.toml``, a ``notebooks/`` folder): the folder Jupyter starts a
    notebook in when a user opens it from there."""
    (root / "pyproject.toml").touch()
    (root / "notebooks").mkdir(exist_ok=True)
    return root / "notebooks"


def text_of(outputs: list[dict]) -> str:
    return "".join(output.get("text", "") for output in outputs if output.output_type == "stream")


def pictures(outputs: list[dict]) -> int:
    return sum("image/png" in output.get("data", {}) for output in outputs)


@pytest.mark.parametrize("name", sorted(path.name for path in NOTEBOOKS.glob("*.ipynb")))
def test_notebooks_are_committed_without_outputs(name):
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    assert all(
        not cell.get("outputs") and not cell.get("execution_count")
        for cell in notebook.cells
        if cell.cell_type == "code"
    )


@pytest.mark.slow
def test_quickstart_pretrains_fine_tunes_evaluates_and_shows_its_pictures(fake_data_dir, run_dir, monkeypatch):
    monkeypatch.setenv("PROJECT_DATA_DIR", str(fake_data_dir))
    monkeypatch.setenv("QUICKSTART_STEPS", "5")
    outputs = execute("quickstart.ipynb", notebooks_folder(run_dir))  # opened from notebooks/, as a user would
    text = text_of(outputs)
    assert "local: using the installed project" in text and "pretrained: logs/mnist/version_0/checkpoints" in text
    assert "test accuracy:" in text and "on 200 images" in text
    assert pictures(outputs) == 2  # the confusion matrix and the grid of predictions
    runs = sorted(str(path.relative_to(run_dir / "logs")) for path in (run_dir / "logs").glob("*/version_*"))
    assert runs == ["digit_at_least_5/version_0", "mnist/version_0"]  # each run named after what it trains


@pytest.mark.slow
def test_inspect_model_notebook_reports_the_newest_checkpoint(quick_args, fake_data_dir, run_dir, monkeypatch):
    run_cli(["fit", *quick_args, "--trainer.max_epochs=1", "--test_after_fit=false"])
    monkeypatch.setenv("PROJECT_DATA_DIR", str(fake_data_dir))
    outputs = execute("inspect_model.ipynb", notebooks_folder(run_dir))  # opened from notebooks/, as a user would
    text = text_of(outputs)
    assert "test accuracy:" in text and "on 200 images" in text
    assert pictures(outputs) == 1  # the confusion matrix, drawn (not printed as "<Figure size 650x650>")
    figures_as_text = [o for o in outputs if "<Figure" in str(o.get("data", {}).get("text/plain", ""))]
    assert all("image/png" in output["data"] for output in figures_as_text)
