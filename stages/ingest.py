"""DVC stage `ingest@<dataset>`: a thin shell around datakiln.ingest.run."""

from datakiln.ingest import run
from datakiln.stage import main

if __name__ == "__main__":
    main("ingest", run)
