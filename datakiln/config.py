"""Typed schema of a dataset declaration, and loading it from params.yaml.

`conf/` is what people edit; Hydra composes it into `params.yaml`, which DVC
tracks. Stages read `params.yaml` (so `dvc exp run -S` overrides reach them),
validate their dataset against the dataclasses below, and refuse to run when
`params.yaml` is stale against `conf/`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import re
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from datakiln.errors import ConfigError, StaleParamsError
from datakiln.secrets.refs import register_resolver

logger = logging.getLogger(__name__)

PARAMS_FILE = "params.yaml"
CONF_DIR = "conf"
CONF_NAME = "config"


# --------------------------------------------------------------------- sources


@dataclass
class DeriveConf:
    """A column computed from another by a regular expression's first group."""

    column: str = MISSING
    pattern: str = MISSING


@dataclass
class SourceConf:
    """Where records come from and how to read them."""

    name: str = MISSING
    # Local file, folder or glob (relative to the repository root), an archive
    # (zip, tar, tar.gz, gz) of such files, or lakefs://repo/ref/path.
    path: str = MISSING
    # auto (by file extension), csv, tsv, jsonl, parquet, text, email
    format: str = "auto"
    # Glob of the files to read inside an archive or a folder.
    member: str | None = None
    # auto detects BOMs and UTF-16; otherwise a Python codec name.
    encoding: str = "auto"
    delimiter: str | None = None
    # For csv and tsv without a header row: the column names.
    columns: list[str] = field(default_factory=list)
    # For csv and tsv: cell values that mean "no value".
    null_values: list[str] = field(default_factory=lambda: [""])
    # For format text: split a file into records on this string; null means
    # one record per file.
    record_separator: str | None = None
    # Put the name of each file's parent folder here (a label, for instance).
    folder_column: str | None = None
    # Column holding the natural key; the stable record id is built from it.
    id_column: str | None = None
    rename: dict[str, str] = field(default_factory=dict)
    derive: dict[str, DeriveConf] = field(default_factory=dict)
    # Constant metadata columns added to every record of this source.
    constants: dict[str, str] = field(default_factory=dict)


@dataclass
class ColumnConf:
    # string, int64, float64, bool, datetime (UTC), bigint (exact integer of
    # any size, kept as its decimal digits)
    type: str = "string"
    nullable: bool = True


# ---------------------------------------------------------------------- stages


@dataclass
class IngestConf:
    batch_rows: int = 50_000
    # Stop the build when more than this share of one source's rows is
    # rejected: that is a wrong declaration (delimiter, encoding), not bad rows.
    max_reject_share: float = 0.5


class UnicodeForm(Enum):
    """The Unicode normalisation form clean applies to every text."""

    NFC = "NFC"
    NFKC = "NFKC"


class TokenAction(Enum):
    """What clean does with each URL or @mention it finds."""

    keep = "keep"
    remove = "remove"
    replace = "replace"


class PiiAction(Enum):
    """What clean does with each piece of personal data of one kind it finds."""

    off = "off"  # not looked for
    keep = "keep"  # left in place, counted
    mask = "mask"  # replaced by <kind>
    pseudonymise = "pseudonymise"  # replaced by <kind:token>, a keyed HMAC
    drop = "drop"  # the record goes to the rejects as pii_<kind>


@dataclass
class PiiActionsConf:
    """One action per kind of personal data (see datakiln/pii.py)."""

    email: PiiAction = PiiAction.off
    phone: PiiAction = PiiAction.off
    # Card numbers that pass the Luhn check.
    card: PiiAction = PiiAction.off
    ip: PiiAction = PiiAction.off
    # IBANs whose check digits are right.
    iban: PiiAction = PiiAction.off
    # @handles, as in tweets.
    mention: PiiAction = PiiAction.off


@dataclass
class PiiConf:
    """Personal data in the text columns, and columns that identify people."""

    actions: PiiActionsConf = field(default_factory=PiiActionsConf)
    # Text columns searched; empty means the clean columns.
    columns: list[str] = field(default_factory=list)
    # Country (ISO 3166 alpha-2) for phone numbers written without +<code>.
    phone_region: str = "US"
    # Columns whose every value is replaced by its pseudonym (an author id, a
    # user name) before anything is published.
    sensitive_columns: list[str] = field(default_factory=list)
    # The pseudonym key: a sops secret reference, never a value.
    key: str = "${secret:pii.pseudonym_key}"


@dataclass
class CleanConf:
    # Text columns the rules apply to; null cells stay null.
    columns: list[str] = field(default_factory=lambda: ["text"])
    # NFC keeps compatibility characters (ligatures, full-width forms); NFKC
    # folds them.
    unicode: UnicodeForm = UnicodeForm.NFC
    # Decode HTML entities exactly once and strip HTML tags. Only the names of
    # HTML elements count as tags: `<UAL.N>` or `<url>` stay text.
    html: bool = True
    # keep, remove or replace (by the token below)
    urls: TokenAction = TokenAction.keep
    url_token: str = "<url>"
    # A list column that receives the URLs found in the text columns (distinct,
    # in order) before they are removed or replaced; null adds no column.
    urls_column: str | None = None
    mentions: TokenAction = TokenAction.keep
    mention_token: str = "<user>"
    # Regular expressions removed from the start of the text, again and again
    # while one matches, such as retweet prefixes.
    strip_prefixes: list[str] = field(default_factory=list)
    # The column the length and language filters read.
    filter_column: str = "text"
    # Bounds on the cleaned text in characters (code points); shorter or longer
    # records are rejected as too_short or too_long.
    min_chars: int = 1
    max_chars: int = 100_000
    # ISO 639-1 codes to keep (langid's codes); empty keeps every language and
    # adds no `language` column.
    languages: list[str] = field(default_factory=list)
    # Texts shorter than this get language `und` and are kept and counted.
    language_min_chars: int = 20
    # Personal data: detection, actions and pseudonyms (datakiln/pii.py).
    pii: PiiConf = field(default_factory=PiiConf)


@dataclass
class DedupConf:
    # The text column compared, after NFKC, case folding and whitespace
    # collapsing.
    column: str = "text"
    exact: bool = True
    # Regular expressions removed from the text for the exact comparison only,
    # such as clean's url token: texts equal once they are removed are exact
    # duplicates. The kept text is unchanged, and near-duplicate shingles still
    # see them, since a threshold is set on texts that have them.
    exact_ignore: list[str] = field(default_factory=list)
    near: bool = True
    # Near duplicates: Jaccard similarity of the sets of word shingles at or
    # above this, among the pairs MinHash LSH proposes.
    threshold: float = 0.8
    # MinHash permutations: more make LSH miss fewer similar pairs, and cost
    # more time and memory.
    num_perm: int = 128
    # Words per shingle; a text with fewer words is one shingle.
    shingle: int = 3
    # Seeds the MinHash permutations, so a build finds the same duplicates.
    seed: int = 1
    # Stop the build if dedup would remove more than this share of one source.
    max_removed_share: float = 0.5


@dataclass
class LabelFunctionConf:
    """One labelling function: it votes a label for a record or abstains."""

    name: str = MISSING
    # keywords, regex, lookup, sentiment, metadata, python
    kind: str = MISSING
    # keywords, regex: the label voted when the column matches.
    label: str | None = None
    # The column the function reads (python functions get the whole batch).
    column: str = "text"
    # keywords: words or phrases, matched whole and ignoring case.
    keywords: list[str] = field(default_factory=list)
    # keywords, regex: vote only when the column matches at least this often.
    min_matches: int = 1
    # regex: searched in the column; lookup: its first group (or the whole
    # match) is the key looked up. Write (?i) to ignore case.
    pattern: str | None = None
    # lookup: key -> label, keys compared ignoring case; metadata: value ->
    # label (without a table the value itself is the label).
    table: dict[str, str] = field(default_factory=dict)
    # lookup: null looks up the whole value; `domain` looks up the host of
    # every URL in the value, then its parent domains (www.cnn.com, cnn.com).
    extract: str | None = None
    # sentiment: VADER compound score above which a record is positive, and
    # below which it is negative; in between it is neutral.
    positive_above: float = 0.05
    negative_below: float = -0.05
    # python: "package.module:function", called with a DataFrame batch; it
    # returns a Series of labels, null where it abstains.
    function: str | None = None


@dataclass
class LabelTaskConf:
    """A label column built from the votes of labelling functions."""

    # The output columns are <name>, <name>_confidence and <name>_votes.
    name: str = MISSING
    # Every label a function may vote, in the order reports list them.
    labels: list[str] = MISSING
    functions: list[LabelFunctionConf] = MISSING
    # How votes become one label: majority, or a model learned from the votes
    # (dawid_skene, one_coin_dawid_skene). With gold, majority and dawid_skene
    # are scored too, to compare.
    model: str = "majority"
    # majority: a tie goes to one of the tied labels by a seeded hash of the
    # record id (random), or leaves the record unlabelled (abstain).
    tie_break: str = "random"
    # Column holding the true label, where there is one. The functions and the
    # model are scored against it on held-out rows.
    gold: str | None = None
    # Share of rows, chosen by a seeded hash of the record id, whose gold is
    # hidden from the functions and from the fit of the model, and on which
    # they are scored. With 0, they are scored on every row, gold seen.
    holdout: float = 0.2


@dataclass
class LabelConf:
    tasks: list[LabelTaskConf] = field(default_factory=list)
    # Seeds the holdout rows and the breaking of ties.
    seed: int = 7
    batch_rows: int = 50_000


@dataclass
class GateConf:
    min_rows: int = 1
    max_rows: int | None = None
    # column -> highest allowed share of nulls
    max_null_share: dict[str, float] = field(default_factory=dict)
    # label task -> lowest allowed share of rows with a label
    min_label_coverage: dict[str, float] = field(default_factory=dict)
    # label task -> lowest allowed share of the rarest label among labelled rows
    # (a declared label that never occurs has share 0)
    min_class_share: dict[str, float] = field(default_factory=dict)
    # same text with different labels: fail, warn or ignore
    conflicting_labels: str = "warn"
    # The text compared by `conflicting_labels`.
    text_column: str = "text"


@dataclass
class ValidateConf:
    # Columns checked beyond the dataset's `schema:` (or overriding it there),
    # such as columns that clean or label add.
    columns: dict[str, ColumnConf] = field(default_factory=dict)
    gates: GateConf = field(default_factory=GateConf)


@dataclass
class SplitConf:
    seed: int = 42
    # Shares of rows; they must add up to 1.
    train: float = 0.8
    validation: float = 0.1
    test: float = 0.1
    # Label task to stratify by; null splits without strata.
    stratify: str | None = None


@dataclass
class PublishConf:
    # local or lakefs; the local folder is always built first
    target: str = "local"
    # Added to the dataset's description in the data card.
    description: str = ""
    license: str = "unknown"
    lakefs_repo: str | None = None
    lakefs_branch: str = "main"
    review: bool = False


@dataclass
class DatasetConf:
    description: str = ""
    sources: list[SourceConf] = field(default_factory=list)
    schema: dict[str, ColumnConf] = field(default_factory=dict)
    ingest: IngestConf = field(default_factory=IngestConf)
    clean: CleanConf = field(default_factory=CleanConf)
    dedup: DedupConf = field(default_factory=DedupConf)
    label: LabelConf = field(default_factory=LabelConf)
    validate: ValidateConf = field(default_factory=ValidateConf)
    split: SplitConf = field(default_factory=SplitConf)
    publish: PublishConf = field(default_factory=PublishConf)


# --------------------------------------------------------------------- loading

# The name of the schema in Hydra's config store: conf/config.yaml lists it
# before each declaration, so composition itself fills in every default and
# rejects a misspelt key or a wrong type, in DVC's process as in ours.
SCHEMA = "schema"


def register_hydra() -> None:
    """Register the dataset schema and the `secret` resolver with Hydra.

    Called before every composition; DVC's own composition reaches it through
    the plugin in hydra_plugins/.
    """
    from hydra.core.config_store import ConfigStore

    register_resolver()
    ConfigStore.instance().store(group="dataset", name=SCHEMA, node=DatasetConf)


def dataset_conf(params: DictConfig | dict[str, Any], name: str) -> DatasetConf:
    """Validate the declaration of dataset `name` against the schema.

    A misspelt key or a wrong type fails here, before a stage does any work,
    with the dotted key path and the file the dataset is declared in.
    """
    datasets = params.get("dataset") or {}
    if name not in datasets:
        known = ", ".join(sorted(datasets)) or "none"
        raise ConfigError(
            f"{PARAMS_FILE}: no dataset '{name}' (declared: {known}). Declare it in "
            f"{CONF_DIR}/dataset/{name}.yaml and list it in {CONF_DIR}/{CONF_NAME}.yaml"
        )
    register_resolver()
    schema = OmegaConf.structured(DatasetConf)
    try:
        merged = OmegaConf.merge(schema, datasets[name])
        obj = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        where = _failing_key(DatasetConf, datasets[name]) or exc.full_key
        key = f"dataset.{name}.{where}" if where else f"dataset.{name}"
        raise ConfigError(
            f"{CONF_DIR}/dataset/{name}.yaml: key '{key}': {exc.msg}. "
            f"Fix the declaration, then run `datakiln compose`."
        ) from None
    assert isinstance(obj, DatasetConf)
    return obj


def _failing_key(cls: type, value: Any, path: str = "") -> str | None:
    """The full dotted key of what fails to validate in `value` as `cls`.

    OmegaConf names a failure inside an element of a list of structured
    configs by its key in that element alone (`tabel`, not
    `label.tasks[1].functions[0].tabel`); validating piece by piece finds it.
    """
    try:
        OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls), value))
        return None
    except OmegaConfBaseException as exc:
        failure = exc
    if isinstance(value, dict | DictConfig):
        for name, hint in typing.get_type_hints(cls).items():
            if name not in value:
                continue
            for sub_path, sub_cls, sub_value in _parts(hint, value[name], path + name):
                found = _failing_key(sub_cls, sub_value, sub_path + ".")
                if found:
                    return found
    key = failure.full_key
    return f"{path}{key}" if key else path.rstrip(".") or None


def _parts(hint: Any, value: Any, path: str) -> Iterator[tuple[str, type, Any]]:
    """The structured configs inside one field: itself, or its list or dict items."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    item = args[-1] if args else None
    if not isinstance(item, type) or not dataclasses.is_dataclass(item):
        item = None
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        yield path, hint, value
    elif item and origin is list and isinstance(value, list | ListConfig):
        for i, element in enumerate(value):
            yield f"{path}[{i}]", item, element
    elif item and origin is dict and isinstance(value, dict | DictConfig):
        for key, element in value.items():
            yield f"{path}.{key!s}", item, element


def load_params(root: Path, overrides: list[str] | None = None) -> DictConfig:
    """Compose params.yaml with Hydra, applying command-line overrides."""
    from hydra import compose, initialize_config_dir

    if not (root / PARAMS_FILE).exists():
        raise ConfigError(
            f"{root / PARAMS_FILE} is missing. Run `datakiln compose` to build it "
            f"from {CONF_DIR}/."
        )
    register_resolver()
    with (
        _hydra_errors(PARAMS_FILE, overrides),
        initialize_config_dir(str(root.resolve()), version_base=None),
    ):
        return compose(config_name="params", overrides=overrides or [])


@contextmanager
def _hydra_errors(
    where: str, overrides: list[str] | None, root: Path | None = None
) -> Iterator[None]:
    """Turn Hydra's composition errors into one ConfigError naming the input."""
    from hydra.errors import HydraException

    try:
        yield
    except (HydraException, OmegaConfBaseException) as exc:
        text = str(exc) + (f"\n{exc.__cause__}" if exc.__cause__ else "")
        raise ConfigError(_composition_message(text, where, overrides, root)) from None


# Lines of Hydra's message that say nothing about the user's input.
_HYDRA_NOISE = re.compile(r"(\w+(_type)?[:=]|Config search path:|provider=)")


def _composition_message(
    text: str, where: str, overrides: list[str] | None, root: Path | None = None
) -> str:
    """One line from Hydra's multi-line error: the file, the key and the cause."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    key = next(
        (ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("full_key:")),
        None,
    )
    file = re.match(r"In '([^']+)': ?(.*)", lines[0]) if lines else None
    if file:
        where = f"{CONF_DIR}/{file.group(1)}.yaml"
        lines[0] = file.group(2)
        if lines[0].endswith("raised while composing config:"):
            lines = lines[1:]
    causes = [ln.rstrip(".") for ln in lines if ln and not _HYDRA_NOISE.match(ln)]
    missing = re.search(r"Could not load '(dataset/[^']+)'", text)
    if missing and root is not None:
        known = sorted(p.stem for p in (root / CONF_DIR / "dataset").glob("*.yaml"))
        causes.append(
            f"there is no {CONF_DIR}/{missing.group(1)}.yaml (the declarations are "
            f"{', '.join(known) or 'none'})"
        )
    if file and key and root is not None and not key.startswith("dataset."):
        key = _declaration_key(root, file.group(1)) or key
    cause = "; ".join(causes) or "unknown error"
    if re.search(r"Invalid value '(False|True)', expected one of \[.*\boff\b", cause):
        cause += (
            " (YAML reads an unquoted off, no, on or yes as a boolean: write "
            "'off' in quotes)"
        )
    given = f" with overrides [{' '.join(overrides)}]" if overrides else ""
    at = f" at key '{key}'" if key else ""
    quoting = (
        "; quote override values holding '=', ',' or spaces, e.g. key='a=b,c'"
        if overrides
        else ""
    )
    return (
        f"{where}: cannot compose{given}{at}: {cause}. Fix the key or value in "
        f"{where} (see the schema in datakiln/config.py){quoting}."
    )


def _declaration_key(root: Path, config: str) -> str | None:
    """The full dotted key of what fails in one dataset's declaration file.

    Hydra names a failure inside a list item by its key in that item alone;
    validating the file piece by piece finds the whole path.
    """
    group, _, name = config.partition("/")
    path = root / CONF_DIR / f"{config}.yaml"
    if group != "dataset" or not path.is_file():
        return None
    try:
        declaration = OmegaConf.load(path)
    except (OSError, OmegaConfBaseException):
        return None
    found = _failing_key(DatasetConf, declaration)
    return f"dataset.{name}.{found}" if found else None


def compose_conf(root: Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """What `conf/` composes to, exactly as DVC's Hydra composition makes it."""
    from hydra import compose, initialize_config_dir

    conf_dir = (root / CONF_DIR).resolve()
    register_hydra()
    with _hydra_errors(f"{CONF_DIR}/{CONF_NAME}.yaml", overrides, root):
        with initialize_config_dir(str(conf_dir), version_base=None):
            cfg = compose(config_name=CONF_NAME, overrides=overrides or [])
        OmegaConf.resolve(cfg)
    container = OmegaConf.to_container(cfg, enum_to_str=True)
    assert isinstance(container, dict)
    return {str(key): value for key, value in container.items()}


def write_params(root: Path, overrides: list[str] | None = None) -> Path:
    """Compose conf/ into params.yaml (what `dvc exp run` does by itself)."""
    from dvc.utils.hydra import compose_and_dump

    register_hydra()
    target = root / PARAMS_FILE
    with _hydra_errors(f"{CONF_DIR}/{CONF_NAME}.yaml", overrides, root):
        compose_and_dump(
            target,
            str((root / CONF_DIR).resolve()),
            None,
            CONF_NAME,
            str(root.resolve()),
            overrides or [],
        )
    return target


def check_fresh(root: Path) -> None:
    """Refuse to build with a params.yaml that conf/ no longer composes to.

    Inside `dvc exp run` DVC has just composed params.yaml from conf/ plus the
    `-S` overrides, so it is fresh by construction and the check is skipped.
    """
    if os.environ.get("DVC_EXP_BASELINE_REV") or os.environ.get("DATAKILN_NO_FRESH"):
        return
    # Digested before composing, so an edit made meanwhile is not taken as checked.
    stamp, digest = _fresh_stamp(root), _digest(root)
    if stamp is not None and stamp.is_file() and stamp.read_text() == digest:
        return
    current = OmegaConf.to_container(OmegaConf.load(root / PARAMS_FILE))
    wanted = compose_conf(root)
    if current == wanted:
        _remember_fresh(stamp, digest)
        return
    keys = sorted(_diff_keys(current, wanted))
    shown = ", ".join(keys[:5]) + (
        f" and {len(keys) - 5} more" if len(keys) > 5 else ""
    )
    raise StaleParamsError(
        f"{PARAMS_FILE} is stale: {CONF_DIR}/ composes to different values at {shown}. "
        f"Run `datakiln compose` (or `dvc exp run`, which composes for you), "
        f"then `dvc repro`."
    )


# Composing conf/ takes Hydra about a second and a half, and every stage checks
# freshness: once a check has passed, its inputs' digest is kept in DVC's
# untracked temporary folder, and a later check with the same inputs is
# answered from it. The digest covers everything composition reads: the files
# under conf/, params.yaml, the schema and the secret resolver (this module and
# secrets/refs.py), and the Hydra and OmegaConf versions.
_FRESH_STAMP = Path(".dvc") / "tmp" / "datakiln-fresh"


def _fresh_stamp(root: Path) -> Path | None:
    return root / _FRESH_STAMP if (root / ".dvc").is_dir() else None


def _digest(root: Path) -> str:
    from importlib.metadata import version

    from datakiln.secrets import refs

    digest = hashlib.sha256()
    conf = root / CONF_DIR
    files = sorted(p for p in conf.rglob("*") if p.is_file())
    inputs = [*files, root / PARAMS_FILE, Path(__file__), Path(refs.__file__)]
    for path in inputs:
        name = path.relative_to(root) if path.is_relative_to(root) else path.name
        digest.update(f"{name}\0".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    for package in ("hydra-core", "omegaconf"):
        digest.update(f"{package}=={version(package)}\0".encode())
    return digest.hexdigest()


def _remember_fresh(stamp: Path | None, digest: str) -> None:
    if stamp is None:
        return
    stamp.parent.mkdir(parents=True, exist_ok=True)
    partial = stamp.with_name(f"{stamp.name}.{os.getpid()}")
    partial.write_text(digest)
    partial.replace(stamp)


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for key in set(a) | set(b):
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in a or key not in b:
                out.append(path)
            else:
                out.extend(_diff_keys(a[key], b[key], path))
        return out
    return [] if a == b else [prefix or "<root>"]
