"""The dataset schema, composition of conf/ and the staleness guard."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from datakiln import config
from datakiln.config import (
    check_fresh,
    compose_conf,
    dataset_conf,
    load_params,
    write_params,
)
from datakiln.errors import ConfigError, StaleParamsError


@pytest.fixture
def project(tmp_path: Path, repo_root: Path) -> Path:
    """A copy of the repo's conf/ with its params.yaml composed."""
    shutil.copytree(repo_root / "conf", tmp_path / "conf", ignore=_no_secrets)
    write_params(tmp_path)
    return tmp_path


def _no_secrets(folder: str, names: list[str]) -> list[str]:
    return [n for n in names if n == "secrets"]


def test_declared_datasets_validate_against_schema(project: Path) -> None:
    params = load_params(project)

    for name in params.dataset:
        conf = dataset_conf(params, name)
        assert conf.sources, f"{name} declares no source"


def test_misspelt_key_names_dotted_path_and_file() -> None:
    params = OmegaConf.create({"dataset": {"d": {"dedup": {"treshold": 0.5}}}})

    with pytest.raises(ConfigError, match=r"conf/dataset/d\.yaml.*dataset\.d\.dedup"):
        dataset_conf(params, "d")


def test_wrong_type_names_dotted_path() -> None:
    params = OmegaConf.create({"dataset": {"d": {"split": {"seed": "forty"}}}})

    with pytest.raises(ConfigError, match=r"dataset\.d\.split\.seed"):
        dataset_conf(params, "d")


def test_unknown_dataset_lists_declared_ones() -> None:
    params = OmegaConf.create({"dataset": {"a": {}, "b": {}}})

    with pytest.raises(ConfigError, match=r"no dataset 'c' \(declared: a, b\)"):
        dataset_conf(params, "c")


def test_override_value_with_equals_at_and_comma_arrives_exactly(
    project: Path,
) -> None:
    value = "a=b,c@d"

    write_params(project, [f"dataset.health_tweets.description='{value}'"])

    params = load_params(project)
    assert params.dataset.health_tweets.description == value


def test_exponent_value_composes_to_float(project: Path) -> None:
    write_params(project, ["dataset.health_tweets.dedup.threshold=1e-5"])

    params = load_params(project)
    threshold = dataset_conf(params, "health_tweets").dedup.threshold
    assert isinstance(threshold, float)
    assert threshold == pytest.approx(1e-5)
    assert "1.0e-05" in (project / "params.yaml").read_text()


def test_composed_params_equal_conf(project: Path) -> None:
    on_disk = OmegaConf.to_container(OmegaConf.load(project / "params.yaml"))

    assert on_disk == compose_conf(project)
    check_fresh(project)


def edit_news_articles_threshold(project: Path) -> None:
    decl = project / "conf" / "dataset" / "news_articles.yaml"
    conf = OmegaConf.load(decl)
    conf.dedup.threshold = 0.5
    OmegaConf.save(conf, decl)


def test_editing_conf_makes_params_stale_with_command_to_fix(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DVC_EXP_BASELINE_REV", raising=False)
    edit_news_articles_threshold(project)

    with pytest.raises(StaleParamsError, match=r"dataset\.news_articles\.dedup"):
        check_fresh(project)
    with pytest.raises(StaleParamsError, match="datakiln compose"):
        check_fresh(project)


def test_a_passed_check_is_remembered_until_conf_changes(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DVC_EXP_BASELINE_REV", raising=False)
    (project / ".dvc").mkdir()
    check_fresh(project)

    def no_composing(root: Path) -> None:
        raise AssertionError("composed although nothing changed")

    monkeypatch.setattr(config, "compose_conf", no_composing)
    check_fresh(project)  # answered from the remembered digest

    monkeypatch.undo()
    monkeypatch.delenv("DVC_EXP_BASELINE_REV", raising=False)
    edit_news_articles_threshold(project)
    with pytest.raises(StaleParamsError, match=r"dataset\.news_articles\.dedup"):
        check_fresh(project)


def test_repo_params_yaml_is_fresh(repo_root: Path) -> None:
    check_fresh(repo_root)


def test_override_of_undeclared_key_is_a_config_error(project: Path) -> None:
    with pytest.raises(ConfigError, match=r"dataset\.health_tweets\.dedup\.nope"):
        write_params(project, ["dataset.health_tweets.dedup.nope=1"])


def test_misspelt_key_in_declaration_fails_composition_naming_file_and_key(
    project: Path,
) -> None:
    decl = project / "conf" / "dataset" / "news_articles.yaml"
    decl.write_text(decl.read_text() + "\nsplitt:\n  seed: 1\n")

    with pytest.raises(
        ConfigError,
        match=r"conf/dataset/news_articles\.yaml.*'dataset\.news_articles\.splitt'",
    ):
        write_params(project)


def test_an_unquoted_off_fails_composition_saying_to_quote_it(project: Path) -> None:
    decl = project / "conf" / "dataset" / "health_tweets.yaml"
    text = decl.read_text()
    assert "      phone: mask\n" in text
    decl.write_text(text.replace("      phone: mask\n", "      phone: off\n"))

    with pytest.raises(
        ConfigError,
        match=r"'dataset\.health_tweets\.clean\.pii\.actions\.phone'.*write 'off' "
        r"in quotes",
    ):
        write_params(project)


def test_misspelt_key_inside_a_list_item_names_its_whole_path(project: Path) -> None:
    decl = project / "conf" / "dataset" / "news_articles.yaml"
    conf = OmegaConf.load(decl)
    conf.label.tasks[1].functions[0].keywrods = ["x"]
    OmegaConf.save(conf, decl)

    with pytest.raises(
        ConfigError,
        match=r"news_articles\.yaml: cannot compose at key "
        r"'dataset\.news_articles\.label\.tasks\[1\]\.functions\[0\]\.keywrods'",
    ):
        write_params(project)


def test_a_dataset_listed_without_its_file_names_the_file_and_the_declarations(
    project: Path,
) -> None:
    listing = project / "conf" / "config.yaml"
    listing.write_text(
        listing.read_text().replace("[schema, news_articles]", "[schema, news_artcles]")
    )

    with pytest.raises(
        ConfigError,
        match=r"conf/config\.yaml: .*no conf/dataset/news_artcles\.yaml \(the "
        r"declarations are health_tweets, news_articles\)",
    ):
        write_params(project)


def test_composition_fills_schema_defaults_for_undeclared_sections(
    project: Path,
) -> None:
    params = OmegaConf.load(project / "params.yaml")

    for name in params.dataset:
        for section in ("ingest", "clean", "dedup", "label", "split", "publish"):
            assert section in params.dataset[name], f"{name}.{section} missing"
