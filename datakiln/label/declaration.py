"""Where a label declaration lives, so errors can point at the exact key."""

from __future__ import annotations

from dataclasses import dataclass

from datakiln.config import CONF_DIR
from datakiln.errors import ConfigError


@dataclass(frozen=True)
class Where:
    """A key of a dataset's declaration, such as `label.tasks[1].functions[0]`."""

    dataset: str
    path: str = "label"

    @property
    def file(self) -> str:
        return f"{CONF_DIR}/dataset/{self.dataset}.yaml"

    def key(self, field: str | None = None) -> str:
        """The dotted key as params.yaml spells it."""
        key = f"dataset.{self.dataset}.{self.path}"
        return f"{key}.{field}" if field else key

    def child(self, suffix: str) -> Where:
        joiner = "" if suffix.startswith("[") else "."
        return Where(self.dataset, f"{self.path}{joiner}{suffix}")

    def error(self, field: str | None, message: str) -> ConfigError:
        return ConfigError(
            f"{self.file}: key '{self.key(field)}': {message}. Fix the declaration, "
            f"then run `datakiln compose`."
        )
