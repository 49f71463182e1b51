"""The README's example declarations are declarations the schema accepts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from datakiln.config import dataset_conf
from datakiln.label.tasks import compile_tasks
from datakiln.split import check_conf as check_split


def declarations(readme: Path) -> list[dict[str, object]]:
    text = readme.read_text(encoding="utf-8")
    section = text[text.index("## Declaring a dataset") :]
    section = section[: section.index("\n## ", 1)]
    blocks = re.findall(r"```yaml\n(.*?)```", section, re.S)
    return [yaml.safe_load(b) for b in blocks if b.lstrip().startswith("description")]


def test_the_readme_shows_two_declarations(repo_root: Path) -> None:
    assert len(declarations(repo_root / "README.md")) == 2


@pytest.mark.parametrize("index", [0, 1])
def test_a_readme_declaration_validates_and_its_label_tasks_compile(
    repo_root: Path, index: int
) -> None:
    declaration = declarations(repo_root / "README.md")[index]

    conf = dataset_conf({"dataset": {"example": declaration}}, "example")

    assert conf.sources and conf.label.tasks
    compile_tasks(conf.label, "example")
    check_split(conf, "example")
