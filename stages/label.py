"""DVC stage `label@<dataset>`: a thin shell around datakiln.label.run."""

from datakiln.label import run
from datakiln.stage import main

if __name__ == "__main__":
    main("label", run)
