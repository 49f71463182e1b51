"""Where each stage of a dataset reads and writes; dvc.yaml uses the same layout."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DatasetPaths:
    root: Path
    dataset: str

    @property
    def interim_dir(self) -> Path:
        return self.root / "data" / "interim" / self.dataset

    def table(self, stage: str) -> Path:
        """The records a stage keeps."""
        return self.interim_dir / f"{stage}.parquet"

    def rejects(self, stage: str) -> Path:
        """The records a stage rejects, each with a `reject_reason`."""
        return self.interim_dir / f"{stage}_rejects.parquet"

    def metrics(self, stage: str) -> Path:
        return self.root / "metrics" / self.dataset / f"{stage}.json"

    def plot(self, name: str) -> Path:
        return self.root / "plots" / self.dataset / f"{name}.csv"

    @property
    def published_dir(self) -> Path:
        return self.root / "data" / "published" / self.dataset
