"""`lakefs://<repo>/<ref>/<path>` addresses, where the path may be a glob."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, replace

from datakiln.errors import ConfigError

SCHEME = "lakefs://"
# lakeFS's own rules for repository and branch names.
_REPO = re.compile(r"^[a-z0-9][a-z0-9-]{2,62}$")
_REF = re.compile(r"^[\w][-\w.~^]*$")
_GLOB_CHARS = "*?["


@dataclass(frozen=True)
class LakeFSURI:
    repo: str
    ref: str
    # Object path, a folder ending in "/", a glob, or "" for the whole ref.
    path: str = ""

    @classmethod
    def parse(cls, text: str, where: str = "address") -> LakeFSURI:
        """Parse `text`; `where` names the key or argument in error messages."""
        if not text.startswith(SCHEME):
            raise ConfigError(
                f"{where}: '{text}' is not a lakeFS address; expected "
                f"lakefs://<repo>/<ref>/<path>."
            )
        repo, _, rest = text[len(SCHEME) :].partition("/")
        ref, _, path = rest.partition("/")
        if not _REPO.match(repo):
            raise ConfigError(
                f"{where}: '{text}' names repository '{repo}'; a lakeFS repository "
                f"name is 3-63 lower-case letters, digits and dashes."
            )
        if not ref or not _REF.match(ref):
            raise ConfigError(
                f"{where}: '{text}' has no valid branch, tag or commit after the "
                f"repository; expected lakefs://{repo}/<ref>/<path>."
            )
        return cls(repo, ref, path)

    def __str__(self) -> str:
        return f"{SCHEME}{self.repo}/{self.ref}/{self.path}"

    def at(self, ref: str) -> LakeFSURI:
        return replace(self, ref=ref)

    @property
    def is_glob(self) -> bool:
        return any(char in self.path for char in _GLOB_CHARS)

    @property
    def list_prefix(self) -> str:
        """The longest fixed prefix of the path, for listing candidates."""
        cut = min(
            (self.path.index(c) for c in _GLOB_CHARS if c in self.path),
            default=len(self.path),
        )
        return self.path[:cut]

    def matches(self, key: str) -> bool:
        """Whether object `key` is selected by this address's path."""
        if self.is_glob:
            return _glob_match(key.split("/"), self.path.split("/"))
        if self.path == "" or self.path.endswith("/"):
            return key.startswith(self.path)
        return key == self.path


def is_lakefs(text: str) -> bool:
    return text.startswith(SCHEME)


def _glob_match(parts: list[str], pattern: list[str]) -> bool:
    """Match path segments as a shell does: `*` stays within one folder and
    `**` spans any number of folders."""
    if not pattern:
        return not parts
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(_glob_match(parts[i:], rest) for i in range(len(parts) + 1))
    return (
        bool(parts)
        and fnmatch.fnmatchcase(parts[0], head)
        and _glob_match(parts[1:], rest)
    )
