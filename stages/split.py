"""DVC stage `split@<dataset>`: a thin shell around datakiln.split.run."""

from datakiln.split import run
from datakiln.stage import main

if __name__ == "__main__":
    main("split", run)
