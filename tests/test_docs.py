"""The documentation keeps to the code: README.md, ARCHITECTURE.md and docs/*.md name only modules and objects that
import, presets that exist, and files that exist; links to a heading find it; the README stays a newcomer's page."""

from __future__ import annotations

import importlib
import re
import unicodedata
from pathlib import Path

import pytest

from project.cli.presets import checked_config
from project.errors import UserInputError

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted(
    [ROOT / "README.md", ROOT / "ARCHITECTURE.md", *(ROOT / "docs").glob("*.md")],
    key=lambda page: page.relative_to(ROOT).as_posix(),
)
PAGE_IDS = [page.relative_to(ROOT).as_posix() for page in PAGES]
README_MAX_LINES = 250

URL = re.compile(r"(?:https?|mailto|ftp)://[^\s)>`\]]+|mailto:[^\s)>`\]]+")
DOTTED = re.compile(r"(?<![\w./-])project(?:\.[A-Za-z_]\w*)+")
CONFIG = re.compile(r"--config(?:=|[ \t]+)([^\s`'\"|)\]]+)")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")


def text_of(page: Path) -> str:
    return page.read_text(encoding="utf-8")


def without_urls(text: str) -> str:
    return URL.sub(" ", text)


def config_names(text: str) -> set[str]:
    """What each ``--config NAME`` / ``--config=NAME`` names, without the sentence's punctuation after it."""
    return {name.rstrip(".,;:!?") for name in CONFIG.findall(without_urls(text))}


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks (where ``[a](b)`` and ``# x`` are not Markdown)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def resolves(dotted: str) -> str | None:
    """None if ``dotted`` is a module, or an attribute (chain) of one; otherwise why not."""
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        module_name = ".".join(parts[:split])
        try:
            obj = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name and (module_name == error.name or module_name.startswith(error.name + ".")):
                continue  # this prefix is not a module: try a shorter one
            return f"importing {module_name} fails: {error}"
        except Exception as error:  # a module that exists but does not import is drift too
            return f"importing {module_name} fails: {type(error).__name__}: {error}"
        for i, attribute in enumerate(parts[split:], start=split):
            if not hasattr(obj, attribute):
                return f"{'.'.join(parts[:i])} has no attribute {attribute!r}"
            obj = getattr(obj, attribute)
        return None
    return "no such module"


def github_anchors(text: str) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces as hyphens, repeats
    numbered."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    for line in prose_lines(text):
        match = HEADING.match(line)
        if not match:
            continue
        title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", match.group(2))  # a link's text
        title = re.sub(r"<[^>]+>", "", title).replace("`", "").replace("*", "").strip().lower()
        slug = "".join(char for char in title if char in " -_" or unicodedata.category(char)[0] in "LN").replace(
            " ", "-"
        )
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_dotted_names_import(page: Path) -> None:
    names = sorted(set(DOTTED.findall(without_urls(text_of(page)))))
    broken = [f"{name}: {why}" for name in names if (why := resolves(name))]
    assert not broken, f"{page.name} names what does not import:\n" + "\n".join(broken)


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_config_presets_exist(page: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # a --config path is relative to the repository root, where the commands run
    names = sorted(config_names(text_of(page)))
    missing = []
    for name in names:
        if name.startswith("logs/"):  # written by a run the page shows first (a sweep's best.yaml)
            continue
        try:
            checked_config(name)
        except UserInputError as error:
            missing.append(str(error))
    assert not missing, f"{page.name} cites presets that do not exist:\n" + "\n".join(missing)


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_relative_links_resolve(page: Path) -> None:
    text = text_of(page)
    broken = []
    for target in LINK.findall("\n".join(prose_lines(text))):
        if re.match(r"^(?:[a-z][a-z0-9+.-]*:|//)", target, re.IGNORECASE):
            continue  # http(s), mailto and other schemes
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no such file {file.relative_to(ROOT) if file.is_relative_to(ROOT) else file}")
        elif anchor and file.suffix == ".md" and file.is_file() and anchor not in github_anchors(text_of(file)):
            broken.append(f"{target}: no heading with anchor #{anchor} in {file.name}")
    assert not broken, f"{page.name} has links that lead nowhere:\n" + "\n".join(broken)


def test_readme_is_short() -> None:
    lines = len(text_of(ROOT / "README.md").splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; at most {README_MAX_LINES}: move detail to docs/"


def test_checks_catch_drift() -> None:
    """Negative controls: the checks above do find what they look for."""
    assert resolves("project.training.TaskModule") is None
    assert resolves("project.training.task_module.TaskModule.load_from_checkpoint") is None
    assert resolves("project.training.NoSuchThing") is not None
    assert resolves("project.no_such_module") is not None
    assert DOTTED.findall(without_urls("see https://x.org/project.nothing and `project.data.`.")) == ["project.data"]
    assert DOTTED.findall("pyproject.toml, project/configs/mnist.yaml") == []
    assert config_names("`--config lora.yaml`, --config=debug, (`--config` alone)") == {"lora.yaml", "debug"}
    assert LINK.findall("[a](docs/x.md#y) ![b](b.png) [c](https://e.org)") == ["docs/x.md#y", "b.png", "https://e.org"]
    assert "few-shot-does-mnist-pretraining-help-on-fashion-mnist" in github_anchors(
        "### Few-shot: does MNIST pretraining help on Fashion-MNIST?\n"
    )
