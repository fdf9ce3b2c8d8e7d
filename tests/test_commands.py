"""One command, ``python -m project fit|validate|test|evaluate|export|predict|sweep``: every subcommand has its
``--help``, takes ``--trust``, spells an option as ``fit`` does, and refuses bad input in one ``error:`` line (exit
status 2) before any work; ``scripts/*.py`` are the same commands. What the parser cannot be told is read from the
user's own arguments, not from the parser's message."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest
from helpers import SCRIPTS, cli_error, run_script

from project.__main__ import main
from project.cli.commands import COMMANDS, sweep_arguments
from project.cli.options import ExportFormat, Split

REPO_ROOT = Path(__file__).resolve().parents[1]
OWN_SUBCOMMANDS = ("evaluate", "export", "predict", "sweep", "crossval", "serve")


def printed_help(args: list[str], capsys) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as caught:
        main(args)
    assert caught.value.code in (0, None)
    return capsys.readouterr().out


def test_the_commands_help_lists_every_subcommand(capsys):
    usage = printed_help(["--help"], capsys)
    assert usage.startswith("usage: python -m project SUBCOMMAND")
    for name in ("fit", "validate", "test", "evaluate", "export", "predict", "sweep", "crossval", "serve"):
        assert f"    {name} " in usage, name


@pytest.mark.parametrize("subcommand", OWN_SUBCOMMANDS)
def test_each_subcommand_has_its_help_with_trust(subcommand, capsys):
    usage = printed_help([subcommand, "--help"], capsys)
    assert usage.startswith(f"usage: python -m project {subcommand} ")
    assert "--trust" in usage and "--help" in usage


def test_help_and_a_refused_option_answer_without_loading_lightning_or_torch():
    code = (
        "import sys\n"
        "from project.__main__ import main\n"
        "for args in (['evaluate', '--help'], ['predict', 'm.ckpt', 'x.png', '--batch-size', '2'], ['sweep', '-h'],\n"
        "             ['crossval', '-h'],\n"
        "             ['serve', '--help'], ['serve', 'folder', '--port', 'http']):\n"
        "    try:\n"
        "        main(args)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "before = sorted(name for name in ('torch', 'lightning') if name in sys.modules)\n"
        "import project.cli.app\n"  # the control: what fit loads
        "after = sorted(name for name in ('torch', 'lightning') if name in sys.modules)\n"
        "print(before, after)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "[] ['lightning', 'torch']"
    assert "error: batch-size is not an option; did you mean batch_size?" in result.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["evaluate", "last.ckpt", "--data-dir", "d"], "data-dir is not an option; did you mean data.data_dir?"),
        (["evaluate", "last.ckpt", "--split", "dev"], "split: expected one of train, val, test, got 'dev'"),
        (["evaluate", "last.ckpt", "--bogus", "1"], "bogus is not an option; the options are data.data_dir, out, "),
        (["evaluate"], "evaluate: give the checkpoint (python -m project evaluate CHECKPOINT"),
        (["export", "last.ckpt", "--formats", "torchscript"], "formats: expected one of onnx, pt2, safetensors, "),
        (["export", "last.ckpt", "--format", "onnx"], "format is not an option; did you mean formats?"),
        (["predict", "last.ckpt", "a.png", "--batch_size", "x"], "batch_size: expected an integer, got 'x'"),
        (["predict", "last.ckpt", "a.png", "--mnist-style"], "mnist-style is not an option; did you mean mnist_style?"),
        (["predict", "last.ckpt"], "predict: give the inputs"),
        (["serve", "exported", "--port", "http"], "port: expected an integer, got 'http'"),
        (["serve", "exported", "--max-batch-size", "8"], "max-batch-size is not an option; did you mean max_batch_si"),
        (["sweep", "mnist", "--workers", "two"], "workers: expected an integer, got 'two'"),
        (["sweep", "mnist", "--trials", "0"], "trials: expected 1 or more, got 0"),
        (["sweep", "mnist", "--interrupted", "later"], "interrupted: expected one of retry, skip, got 'later'"),
        (["sweep", "mnist", "--name", "a/b"], "name: 'a/b' is not a folder name"),
        (["sweep", "--trials", "3"], "sweep: give the spec"),
        (["crossval", "--folds", "1"], "folds: expected 2 or more, got 1"),
        (["crossval", "--workers", "two"], "workers: expected an integer, got 'two'"),
        (["fit", "--data_dir=d"], "data_dir is not an option; did you mean data.data_dir?"),
        (["predicts", "last.ckpt"], "predicts is not a subcommand: use one of fit, validate, test, evaluate, export, "),
        ([], "no subcommand given: use one of fit, validate, test, evaluate, export, predict, sweep"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else None,
)
def test_bad_input_on_every_subcommand_is_one_error_line_and_writes_nothing(args, expected, run_dir, capsys):
    assert expected in cli_error(args, capsys, root=run_dir)


def test_trust_is_taken_by_every_subcommand_that_loads_a_file(run_dir, capsys):
    for args in (["evaluate", "x.ckpt"], ["export", "x.ckpt"], ["predict", "x.ckpt", "a.png"], ["serve", "x"]):
        message = cli_error([*args, "--trust", "no_such_module_of_yours"], capsys, root=run_dir)
        assert message.startswith("error: cannot import the trusted module 'no_such_module_of_yours'"), args
    options, fit_args = sweep_arguments(["mnist", "--trust", "mine", "--trials", "3", "--data.data_dir=d", "--name=x"])
    assert (options.spec, options.trials, options.name, options.workers) == ("mnist", 3, "x", 1)
    assert fit_args == ["--trust", "mine", "--data.data_dir=d"]  # every trial's fit imports and trusts it


def test_a_subcommand_of_the_whole_command_given_to_lightning_cli_says_where_it_is(run_dir, capsys):
    from project.cli import main as lightning_cli

    with pytest.raises(SystemExit):
        lightning_cli(["predict", "x.ckpt"])
    assert capsys.readouterr().err.strip() == (
        "error: predict is not a subcommand here (fit, validate, test): run python -m project predict"
    )


def test_the_parsers_choices_are_the_pieces_own():
    from project.inference.evaluation import SPLITS
    from project.inference.export import FORMATS

    assert get_args(Split) == tuple(SPLITS) and get_args(ExportFormat) == FORMATS
    assert set(COMMANDS) == {"fit", "validate", "test", "evaluate", "export", "predict", "sweep", "crossval", "serve"}


@pytest.mark.parametrize(
    "script", ["evaluate.py", "export.py", "predict.py", "sweep.py", "crossval.py", "serve.py", "train.py"]
)
def test_each_script_is_an_import_and_a_call(script):
    body = ast.parse((SCRIPTS / script).read_text()).body
    statements = [node for node in body if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))]
    assert [type(node) for node in statements] == [ast.ImportFrom, ast.Expr], script


def test_a_script_says_what_the_command_says(run_dir, capsys, monkeypatch):
    code, _, err = run_script("evaluate.py", ["last.ckpt", "--data-dir", "d"], capsys, monkeypatch)
    assert code == 2 and err == "error: data-dir is not an option; did you mean data.data_dir?\n"


def test_the_value_named_in_a_refusal_is_the_one_the_user_gave(quick_args, run_dir, capsys):
    (run_dir / "preset.yaml").write_text("data:\n  batch_size: many\n")
    message = cli_error(["fit", *quick_args, "--config=preset.yaml"], capsys, root=run_dir)
    assert message == "error: data.batch_size: expected an integer, got 'many'"
    message = cli_error(["fit", *quick_args, "--config=preset.yaml", "--data.batch_size=lots"], capsys, root=run_dir)
    assert message == "error: data.batch_size: expected an integer, got 'lots'"  # the command line wins


def test_evaluate_export_and_predict_run_as_subcommands(pretrained_checkpoint, image_folder, tmp_path, capsys):
    main(["evaluate", str(pretrained_checkpoint), "--split", "val", "--out", str(tmp_path / "report")])
    assert json.loads((tmp_path / "report" / "metrics.json").read_text())["split"] == "val"
    main(["export", str(pretrained_checkpoint), "--out", str(tmp_path / "exported"), "--formats", "safetensors"])
    assert sorted(path.name for path in (tmp_path / "exported").iterdir()) == [
        "README.md", "config.json", "model.safetensors"
    ]  # fmt: skip
    out = tmp_path / "predictions.csv"
    main(["predict", str(pretrained_checkpoint), str(image_folder), "--out", str(out), "--mnist_style"])
    assert out.read_text().startswith("path,predicted,p_")
    assert f"wrote 120 predictions to {out}" in capsys.readouterr().out
