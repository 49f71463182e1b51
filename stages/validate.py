"""DVC stage `validate@<dataset>`: a thin shell around datakiln.validate.run."""

from datakiln.stage import main
from datakiln.validate import run

if __name__ == "__main__":
    main("validate", run)
