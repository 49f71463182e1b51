"""Secrets through the real sops binary, with age keys made by the tests."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf
from sops_helpers import (
    AgeKey,
    clean_env,
    default_key_file,
    sops_encrypt_plain,
    write_sops_config,
)

from datakiln.errors import SecretError
from datakiln.secrets import Secret, SecretRef, references, register_resolver
from datakiln.secrets.keys import MalformedKeyError, NoAgeKeyError
from datakiln.secrets.manage import check, init, set_secret
from datakiln.secrets.sops import (
    MacMismatchError,
    NotEncryptedError,
    WrongRecipientError,
)
from datakiln.secrets.store import MissingSecretError, SecretStore, SecretTypeError

PEM = (
    "-----BEGIN PRIVATE KEY-----\n"
    "MIIBVQIBADANBgkqhkiG9w0BAQEFAASCAT8wggE7AgEAAkEAq7BFUpkGp3+LQmlQ\n"
    "Yx2eqzDV+xeG8kx/sQFV18S5JhzGeIJNA72wSeukEPojtqUyX2J0CciPBh7eqclQ\n"
    "-----END PRIVATE KEY-----\n"
)
TRICKY = {
    "zero_padded": "0012",
    "underscored": "12345_54321",
    "long_number": "1234567890123456789012345",
    "pem": PEM,
}


@pytest.fixture
def key() -> AgeKey:
    return AgeKey.generate()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def root(tmp_path: Path, key: AgeKey) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    write_sops_config(path, key.recipient)
    return path


@pytest.fixture
def store(root: Path, home: Path, key: AgeKey) -> SecretStore:
    """A store whose user keeps the key in sops's default key file."""
    key.write(default_key_file(home))
    return SecretStore(root, clean_env(home))


def _reader(root: Path, home: Path, **env: str) -> SecretStore:
    return SecretStore(root, clean_env(home, **env))


# ---------------------------------------------------------------- round trip


@pytest.mark.parametrize("name", sorted(TRICKY))
def test_values_round_trip_exactly_as_strings(
    store: SecretStore, root: Path, home: Path, name: str
) -> None:
    set_secret(store, "conf/secrets/tricky.yaml", name, TRICKY[name])

    fresh = SecretStore(root, store.env)
    value = fresh.get(f"tricky.{name}").reveal()

    assert value == TRICKY[name]
    assert isinstance(value, str)


def test_several_values_share_one_file_and_nested_keys_work(
    store: SecretStore, root: Path
) -> None:
    for name, value in TRICKY.items():
        set_secret(store, "tricky", f"group.{name}", value)

    fresh = SecretStore(root, store.env)
    assert {n: fresh.get(f"tricky.group.{n}").reveal() for n in TRICKY} == TRICKY
    assert [r.summary for r in check(fresh)] == [
        "conf/secrets/tricky.yaml: ok (4 value(s), encrypted for 1 recipient(s), "
        "MAC valid)"
    ]


def test_the_file_on_disk_holds_no_value(store: SecretStore, root: Path) -> None:
    set_secret(store, "pii", "pseudonym_key", "canary-value-3b1f0a")

    text = (root / "conf/secrets/pii.yaml").read_text()
    assert "canary-value-3b1f0a" not in text
    assert re.search(r"pseudonym_key: ENC\[AES256_GCM,.*type:str\]", text)


def test_a_value_yaml_would_retype_is_reported_with_the_fix(
    root: Path, home: Path, key: AgeKey
) -> None:
    env = clean_env(home, SOPS_AGE_KEY=key.secret)
    sops_encrypt_plain(
        root,
        "conf/secrets/typed.yaml",
        'pin: 0012\nid: 12345_54321\nbig: 1234567890123456789012345\nok: "0012"\n',
        env,
    )
    store = SecretStore(root, env)

    (report,) = check(store)
    problems = "\n".join(report.problems)
    for key_name, kind in (("pin", "int"), ("id", "int"), ("big", "float")):
        assert f"key '{key_name}' is stored as {kind}, not as a string" in problems
    assert "'ok'" not in problems
    assert "Quote it" in problems
    assert "0012" not in problems and "1234567890" not in problems
    with pytest.raises(SecretTypeError, match=r"key 'pin' is stored as int.*Quote it"):
        store.get("typed.pin")
    assert store.get("typed.ok").reveal() == "0012"


# ---------------------------------------------------------------- key sources


def test_key_from_sops_age_key_variable_as_ci_passes_it(
    store: SecretStore, root: Path, home: Path, key: AgeKey
) -> None:
    set_secret(store, "ci", "token", "t0k3n")
    default_key_file(home).unlink()

    ci = _reader(root, home, SOPS_AGE_KEY=key.secret)
    assert ci.get("ci.token").reveal() == "t0k3n"


def test_key_from_sops_age_key_file(
    store: SecretStore, root: Path, home: Path, key: AgeKey, tmp_path: Path
) -> None:
    set_secret(store, "ci", "token", "t0k3n")
    default_key_file(home).unlink()
    elsewhere = key.write(tmp_path / "elsewhere" / "age.txt")

    reader = _reader(root, home, SOPS_AGE_KEY_FILE=str(elsewhere))
    assert reader.get("ci.token").reveal() == "t0k3n"


def test_a_key_that_has_a_value_is_replaced_only_when_asked(
    store: SecretStore, root: Path
) -> None:
    set_secret(store, "pii", "pseudonym_key", "first")

    with pytest.raises(SecretError, match=r"already has a value.*--replace"):
        set_secret(store, "pii", "pseudonym_key", "second")
    assert store.decrypt(root / "conf/secrets/pii.yaml")["pseudonym_key"] == "first"

    set_secret(store, "pii", "pseudonym_key", "second", replace=True)
    assert store.decrypt(root / "conf/secrets/pii.yaml")["pseudonym_key"] == "second"


# ---------------------------------------------------------------- errors


@pytest.fixture
def encrypted(store: SecretStore, root: Path) -> Path:
    set_secret(store, "pii", "pseudonym_key", "k" * 40)
    set_secret(store, "pii", "other", "o" * 10)
    return root / "conf/secrets/pii.yaml"


def test_no_key_names_the_variables_and_the_file_tried(
    encrypted: Path, root: Path, home: Path
) -> None:
    default_key_file(home).unlink()
    expected = (
        r"no age key found to decrypt secrets: SOPS_AGE_KEY is not set; "
        r"SOPS_AGE_KEY_FILE is not set; the default key file "
        + re.escape(str(default_key_file(home)))
        + r" does not exist\. Run `datakiln secrets init`"
    )
    with pytest.raises(NoAgeKeyError, match=expected):
        _reader(root, home).get("pii.pseudonym_key")


def test_a_key_file_variable_pointing_nowhere_is_named(
    encrypted: Path, root: Path, home: Path, tmp_path: Path
) -> None:
    default_key_file(home).unlink()
    missing = tmp_path / "nope.txt"
    with pytest.raises(
        NoAgeKeyError, match=rf"SOPS_AGE_KEY_FILE is set to {re.escape(str(missing))}"
    ):
        _reader(root, home, SOPS_AGE_KEY_FILE=str(missing)).get("pii.other")


def test_key_for_another_recipient_names_the_files_recipients(
    encrypted: Path, root: Path, home: Path, key: AgeKey
) -> None:
    stranger = AgeKey.generate()
    default_key_file(home).unlink()
    reader = _reader(root, home, SOPS_AGE_KEY=stranger.secret)

    with pytest.raises(WrongRecipientError) as caught:
        reader.get("pii.pseudonym_key")
    message = str(caught.value)
    assert message.startswith(
        f"conf/secrets/pii.yaml is encrypted for {key.recipient}; your key "
        f"({stranger.recipient}, from $SOPS_AGE_KEY) is not among them."
    )
    assert "sops updatekeys conf/secrets/pii.yaml" in message
    assert stranger.secret not in message


@pytest.mark.parametrize(
    ("mangle", "problem"),
    [
        (lambda k: f'"{k}"', "it is wrapped in quotes; remove them"),
        (lambda k: f"'{k}'", "it is wrapped in quotes; remove them"),
        (lambda k: f"{k} ", "it has spaces or tabs around it"),
        (lambda k: f"export SOPS_AGE_KEY={k}", "it looks like a shell assignment"),
        (lambda k: k.lower(), "it is not in upper case"),
        (lambda k: k[:-3] + ("AAA" if k[-3:] != "AAA" else "QQQ"), "checksum"),
    ],
)
def test_a_malformed_key_says_what_is_wrong_without_showing_it(
    encrypted: Path, root: Path, home: Path, key: AgeKey, mangle, problem: str
) -> None:
    default_key_file(home).unlink()
    bad = mangle(key.secret)
    reader = _reader(root, home, SOPS_AGE_KEY=bad)

    with pytest.raises(MalformedKeyError, match=re.escape(problem)) as caught:
        reader.get("pii.pseudonym_key")
    assert str(caught.value).startswith("$SOPS_AGE_KEY: line 1 is not an age secret")
    assert key.secret not in str(caught.value)
    assert key.secret.lower() not in str(caught.value)


def test_a_public_key_given_as_the_secret_key_is_named_so(
    encrypted: Path, root: Path, home: Path, key: AgeKey
) -> None:
    path = default_key_file(home)
    path.write_text(f"# my key\n{key.recipient}\n")
    with pytest.raises(
        MalformedKeyError,
        match=rf"{re.escape(str(path))}: line 2 .*it is a public key \(a recipient",
    ):
        _reader(root, home).get("pii.pseudonym_key")


def test_a_hand_edit_breaks_the_mac_and_is_never_ignored(
    encrypted: Path, root: Path, home: Path
) -> None:
    lines = encrypted.read_text().splitlines(keepends=True)
    encrypted.write_text(
        "".join(line for line in lines if not line.startswith("other:"))
    )

    with pytest.raises(
        MacMismatchError,
        match=r"conf/secrets/pii\.yaml: its MAC does not match its contents: the file "
        r"was changed outside sops",
    ):
        _reader(root, home).get("pii.pseudonym_key")


def test_a_changed_ciphertext_is_caught(
    encrypted: Path, root: Path, home: Path
) -> None:
    text = encrypted.read_text()
    start = text.index("other: ENC[AES256_GCM,data:") + len(
        "other: ENC[AES256_GCM,data:"
    )
    flipped = "A" if text[start] != "A" else "B"
    encrypted.write_text(text[:start] + flipped + text[start + 1 :])

    with pytest.raises(MacMismatchError, match=r"changed outside sops"):
        _reader(root, home).get("pii.pseudonym_key")


def test_a_plain_file_is_not_encrypted(store: SecretStore, root: Path) -> None:
    plain = root / "conf/secrets/plain.yaml"
    plain.parent.mkdir(parents=True)
    plain.write_text("token: abc\n")
    with pytest.raises(NotEncryptedError, match=r"plain\.yaml: not encrypted"):
        store.get("plain.token")


def test_a_missing_file_or_key_names_the_command_that_adds_it(
    encrypted: Path, store: SecretStore
) -> None:
    with pytest.raises(
        MissingSecretError,
        match=r"conf/secrets/lakefs\.yaml does not exist.*"
        r"`datakiln secrets set conf/secrets/lakefs\.yaml secret_key`",
    ):
        store.get("lakefs.secret_key")
    with pytest.raises(
        MissingSecretError,
        match=r"no key 'missing' .*has: other, pseudonym_key\)",
    ):
        store.get("pii.missing")


def test_check_reports_each_broken_file_and_passes_good_ones(
    encrypted: Path, store: SecretStore, root: Path
) -> None:
    (root / "conf/secrets/plain.yaml").write_text("pin: 0012\n")
    (root / "conf/secrets/README.md").write_text("what lives here\n")

    reports = {r.shown: r for r in check(SecretStore(root, store.env))}
    assert sorted(reports) == ["conf/secrets/pii.yaml", "conf/secrets/plain.yaml"]

    assert reports["conf/secrets/pii.yaml"].ok
    plain = reports["conf/secrets/plain.yaml"]
    assert not plain.ok
    assert "not encrypted" in plain.problems[0]
    assert "key 'pin' is not quoted and YAML reads it as int" in plain.problems[1]


def test_check_reports_a_file_that_is_not_yaml_without_quoting_it(
    encrypted: Path, store: SecretStore, root: Path
) -> None:
    (root / "conf/secrets/broken.yaml").write_text("pseudonym_key: [s3cr3tVALUE\n")

    reports = {r.shown: r for r in check(SecretStore(root, store.env))}

    broken = reports["conf/secrets/broken.yaml"]
    assert "cannot read it as YAML" in broken.problems[0]
    assert not any("s3cr3tVALUE" in problem for problem in broken.problems)


def test_check_reports_a_recipient_the_file_is_not_yet_encrypted_for(
    encrypted: Path, store: SecretStore, root: Path, key: AgeKey
) -> None:
    newcomer = AgeKey.generate()
    write_sops_config(root, key.recipient, newcomer.recipient)

    (report,) = check(SecretStore(root, store.env))
    assert report.problems == [
        f"conf/secrets/pii.yaml: not yet encrypted for {newcomer.recipient} listed "
        f"in .sops.yaml; run `sops updatekeys conf/secrets/pii.yaml` and commit."
    ]


# ---------------------------------------------------------------- init


def test_init_makes_a_private_key_outside_the_repo_and_lists_it(
    tmp_path: Path, home: Path
) -> None:
    root = tmp_path / "fresh"
    root.mkdir()
    store = SecretStore(root, clean_env(home))

    lines = init(store, ["pii.pseudonym_key"])

    path = default_key_file(home)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    recipient = re.search(r"# public key: (age1\w+)", path.read_text()).group(1)
    rules = yaml.safe_load((root / ".sops.yaml").read_text())
    assert rules["creation_rules"][0]["age"] == [recipient]
    assert lines[0].startswith(f"created a new age key in {path}")
    assert "random value" in lines[-1]
    assert len(SecretStore(root, store.env).get("pii.pseudonym_key").reveal()) >= 32
    assert not list(root.rglob("keys.txt"))


def test_init_again_keeps_the_key_the_recipients_and_the_secrets(
    tmp_path: Path, home: Path
) -> None:
    root = tmp_path / "fresh"
    root.mkdir()
    init(SecretStore(root, clean_env(home)), ["pii.pseudonym_key"])
    before = {
        p: p.read_bytes() for p in [*root.rglob("*.yaml"), default_key_file(home)]
    }

    lines = init(SecretStore(root, clean_env(home)), ["pii.pseudonym_key"])

    assert lines[0].startswith("using your age key from")
    assert lines[-1] == "pii.pseudonym_key exists in conf/secrets/pii.yaml; kept"
    assert {p: p.read_bytes() for p in before} == before


def test_init_adds_a_newcomer_to_the_existing_rules_keeping_comments(
    root: Path, home: Path, key: AgeKey
) -> None:
    lines = init(SecretStore(root, clean_env(home)), [])

    text = (root / ".sops.yaml").read_text()
    assert text.startswith("# test recipients\n")
    recipients = yaml.safe_load(text)["creation_rules"][0]["age"]
    assert recipients[0] == key.recipient and len(recipients) == 2
    assert "sops updatekeys" in lines[1]


# ---------------------------------------------------------------- references


def test_references_are_parsed_and_found() -> None:
    ref = SecretRef.parse("lakefs.secret_key")
    assert (ref.file, ref.key) == ("lakefs", ("secret_key",))
    assert references({"a": ["x ${secret:a.b} y ${secret: c.d.e }"], "b": 3}) == {
        "a.b",
        "c.d.e",
    }
    with pytest.raises(ValueError, match="'nodot' is not a secret name"):
        SecretRef.parse("nodot")


def test_composition_keeps_the_reference_not_the_value() -> None:
    register_resolver()
    cfg = OmegaConf.create(
        {"key": "${secret:pii.pseudonym_key}", "url": "u:${secret:db.pw}@h"}
    )
    OmegaConf.resolve(cfg)
    assert OmegaConf.to_container(cfg) == {
        "key": "${secret:pii.pseudonym_key}",
        "url": "u:${secret:db.pw}@h",
    }


def test_reveal_substitutes_in_memory(encrypted: Path, store: SecretStore) -> None:
    assert store.reveal("user:${secret:pii.other}@host") == "user:" + "o" * 10 + "@host"


def test_reprs_never_show_a_value(encrypted: Path, store: SecretStore) -> None:
    secret = store.get("pii.other")
    assert repr(secret) == str(secret) == f"{secret}" == "Secret('pii.other')"
    assert "o" * 10 not in repr(store)
    assert isinstance(secret, Secret)
    with pytest.raises(TypeError, match="not picklable"):
        import pickle

        pickle.dumps(secret)


def test_a_bad_name_is_a_secret_error(store: SecretStore) -> None:
    with pytest.raises(SecretError, match="'pii' is not a secret name"):
        store.get("pii")
