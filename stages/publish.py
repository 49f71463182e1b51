"""DVC stage `publish@<dataset>`: a thin shell around datakiln.publish.run."""

from datakiln.publish import run
from datakiln.stage import main

if __name__ == "__main__":
    main("publish", run)
