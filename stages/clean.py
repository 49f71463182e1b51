"""DVC stage `clean@<dataset>`: a thin shell around datakiln.clean.run."""

from datakiln.clean import run
from datakiln.stage import main

if __name__ == "__main__":
    main("clean", run)
