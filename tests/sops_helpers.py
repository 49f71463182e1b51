"""Age keys made by the tests, and a checkout with a `.sops.yaml` for them.

Every key here is generated at test time (never committed). Environments are
built from scratch so that no key of the person running the tests, nor any
SOPS_* variable of theirs, can leak in.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pyrage

SOPS = Path(sys.executable).parent / "sops"
DATAKILN = Path(sys.executable).parent / "datakiln"


@dataclass(frozen=True)
class AgeKey:
    secret: str
    recipient: str

    @classmethod
    def generate(cls) -> AgeKey:
        identity = pyrage.x25519.Identity.generate()
        return cls(str(identity), str(identity.to_public()))

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# public key: {self.recipient}\n{self.secret}\n")
        return path


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """An environment with a fresh HOME and no sops variables of the caller."""
    env = {
        "PATH": f"{SOPS.parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "LANG": "C.UTF-8",
    }
    env.update(extra)
    return env


def default_key_file(home: Path) -> Path:
    return home / ".config" / "sops" / "age" / "keys.txt"


def write_sops_config(root: Path, *recipients: str) -> None:
    listed = "".join(f"      - {r}\n" for r in recipients)
    (root / ".sops.yaml").write_text(
        "# test recipients\ncreation_rules:\n"
        "  - path_regex: (^|/)conf/secrets/[^/]+\\.yaml$\n"
        f"    age:\n{listed}"
    )


def sops_encrypt_plain(
    root: Path, relative: str, plain_yaml: str, env: dict[str, str]
) -> Path:
    """Encrypt hand-written YAML with sops itself, as a person would."""
    target = root / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [str(SOPS), "encrypt", "--filename-override", relative],
        cwd=root,
        env=env,
        input=plain_yaml,
        capture_output=True,
        text=True,
        check=True,
    )
    target.write_text(proc.stdout)
    return target
