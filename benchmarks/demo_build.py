"""Time the full demo build and report peak memory.

Usage (from the repo root, after `make demo` has fetched the data):

    .venv/bin/python benchmarks/demo_build.py [--stages]

It runs `dvc repro --force` (every stage of both datasets) and prints the wall
time and the peak resident memory of the largest process of the build. With
`--stages` it then runs every stage command on its own and prints a line per
stage and dataset, to show where the time goes.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

STAGES = ["ingest", "clean", "dedup", "label", "validate", "split", "publish"]


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Run `cmd`; return wall seconds and peak RSS in MiB of it or a child.

    On Linux the rusage that wait4 reports for a process already folds in the
    peak of every descendant it waited for, so one number covers the build.
    """
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(cmd)} failed")
    return wall, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", action="store_true", help="time each stage too")
    args = parser.parse_args()

    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    datasets = list(yaml.safe_load(Path("params.yaml").read_text())["dataset"])

    print(f"cores: {os.cpu_count()}  datasets: {', '.join(datasets)}")
    wall, peak = timed(["dvc", "repro", "--force", "--quiet"], env)
    print(f"dvc repro --force: {wall:6.1f} s wall, peak RSS {peak:7.0f} MiB")

    if not args.stages:
        return
    total = 0.0
    for stage in STAGES:
        for dataset in datasets:
            cmd = [sys.executable, f"stages/{stage}.py", dataset, "--quiet"]
            wall, peak = timed(cmd, env)
            total += wall
            print(f"  {stage:>8}@{dataset:<14} {wall:6.1f} s  peak {peak:6.0f} MiB")
    print(f"  sum of stages: {total:6.1f} s")


if __name__ == "__main__":
    main()
