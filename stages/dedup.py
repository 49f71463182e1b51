"""DVC stage `dedup@<dataset>`: a thin shell around datakiln.dedup.run."""

from datakiln.dedup import run
from datakiln.stage import main

if __name__ == "__main__":
    main("dedup", run)
