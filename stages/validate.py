"""DVC stage `validate@<dataset>`: a thin shell around datakiln.validate.run."""

from datakiln.validate import run

from datakiln.stage import main

if __name__ == "__main__":
    main("validate", run)
