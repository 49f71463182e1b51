"""DVC stage `pin@<dataset>`: a thin shell around datakiln.lakefs.pin.run."""

from datakiln.lakefs.pin import run
from datakiln.stage import main

if __name__ == "__main__":
    main("pin", run)
