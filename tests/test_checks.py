"""`datakiln compose` checks the values of every declaration before any stage."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from datakiln import cli


@pytest.fixture
def project(tmp_path: Path, repo_root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copytree(repo_root / "conf", tmp_path / "conf")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def edit(project: Path, dotted: str, value: object) -> None:
    decl = project / "conf" / "dataset" / "news_articles.yaml"
    conf = OmegaConf.load(decl)
    OmegaConf.update(conf, dotted, value)
    OmegaConf.save(conf, decl)


def test_the_example_declarations_pass(project: Path) -> None:
    assert cli.main(["compose"]) == 0


@pytest.mark.parametrize(
    ("dotted", "value", "message"),
    [
        ("split.stratify", "outlet_name", r"split\.stratify': no label task"),
        ("dedup.threshold", 1.5, r"dedup\.threshold'"),
        (
            "label.tasks.1.functions.6.pattern",
            "(",
            r"tasks\[1\]\.functions\[6\]\.pattern",
        ),
        ("publish.target", "s3", r"publish\.target': unknown target 's3'"),
    ],
)
def test_a_bad_value_stops_compose_naming_its_key(
    project: Path,
    capsys: pytest.CaptureFixture[str],
    dotted: str,
    value: object,
    message: str,
) -> None:
    edit(project, dotted, value)

    code = cli.main(["compose"])

    assert code != 0
    err = capsys.readouterr().err
    assert err.startswith("datakiln compose: conf/dataset/news_articles.yaml")
    assert re.search(message, err), err
