"""The whole DAG under real `dvc` in a real git repository.

One small project is built once per module (a CSV of reviews declared in YAML
alone); each test then changes one thing and checks which stages DVC reruns.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from ruamel.yaml import YAML

FIXTURE = Path(__file__).parent / "fixtures" / "project"
STAGES = ["ingest", "clean", "dedup", "label", "validate", "split", "publish"]
RUNNING = re.compile(r"Running stage '([^']+)'")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["DVC_NO_ANALYTICS"] = "1"
    env.pop("DVC_EXP_BASELINE_REV", None)
    return env


def run(root: Path, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        cmd, cwd=root, env=_env(), capture_output=True, text=True, timeout=600
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def repro(root: Path, *args: str) -> set[str]:
    """Run `dvc repro` and return the stages it ran."""
    proc = run(root, "dvc", "repro", *args)
    return set(RUNNING.findall(proc.stdout + proc.stderr))


def write_reviews(path: Path, rows: int = 60) -> None:
    rng = random.Random(5)
    good = ["great", "excellent", "love it", "works well"]
    bad = ["broken", "awful", "want a refund", "stopped working"]
    things = ["kettle", "lamp", "chair", "phone case", "backpack", "blender"]
    lines = ["id,text,score"]
    for i in range(rows):
        words = good if i % 2 else bad
        text = f"The {rng.choice(things)} is {rng.choice(words)}, order {i % 40}"
        lines.append(f'{1000 + i},"{text}",{rng.randint(1, 5)}.0')
    lines.append(lines[3].replace("1002,", "2002,"))  # an exact duplicate
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, repo_root: Path) -> Path:
    root = tmp_path_factory.mktemp("project")
    shutil.copy(repo_root / "dvc.yaml", root / "dvc.yaml")
    ignore = shutil.ignore_patterns("__pycache__")
    # hydra_plugins: DVC's own Hydra composition (`dvc exp run -S`) loads the
    # plugin that registers the dataset schema from the project's root.
    for folder in ("stages", "datakiln", "hydra_plugins"):
        shutil.copytree(repo_root / folder, root / folder, ignore=ignore)
    (root / "conf" / "dataset").mkdir(parents=True)
    shutil.copy(FIXTURE / "tiny.yaml", root / "conf" / "dataset" / "tiny.yaml")
    (root / "conf" / "config.yaml").write_text(
        "defaults:\n  - dataset@dataset.tiny: [schema, tiny]\n  - _self_\n"
    )
    write_reviews(root / "data" / "raw" / "tiny" / "reviews.csv")
    (root / ".gitignore").write_text("/data/raw/\n")

    run(root, "git", "init", "-q")
    run(root, "git", "config", "user.email", "ci@example.invalid")
    run(root, "git", "config", "user.name", "datakiln tests")
    run(root, "dvc", "init", "-q")
    run(root, "dvc", "config", "hydra.enabled", "true")
    run(root, "dvc", "config", "core.autostage", "true")
    run(root, "datakiln", "compose")
    run(root, "git", "add", "-A")
    run(root, "git", "commit", "-qm", "tiny project")

    ran = repro(root)
    assert {f"{s}@tiny" for s in STAGES} <= ran
    run(root, "git", "add", "-A")
    run(root, "git", "commit", "-qm", "first build")
    return root


def edit_declaration(root: Path, edit: dict[str, object]) -> None:
    path = root / "conf" / "dataset" / "tiny.yaml"
    decl = yaml.safe_load(path.read_text())
    for dotted, value in edit.items():
        *parents, last = dotted.split(".")
        node = decl
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[last] = value
    path.write_text(yaml.safe_dump(decl, sort_keys=False))


def test_second_repro_runs_nothing_and_status_is_clean(project: Path) -> None:
    assert repro(project) == set()

    status = run(project, "dvc", "status").stdout
    assert "up to date" in status


def test_changing_a_labelling_function_reruns_label_and_later_stages_only(
    project: Path,
) -> None:
    edit_declaration(
        project,
        {"label.tasks.0.functions.0.keywords": ["great", "excellent", "love", "well"]},
    )

    ran = repro(project)

    assert ran == {"compose"} | {f"{s}@tiny" for s in STAGES[3:]}
    params = yaml.safe_load((project / "params.yaml").read_text())
    functions = params["dataset"]["tiny"]["label"]["tasks"][0]["functions"]
    assert "well" in functions[0]["keywords"]


def test_exp_run_override_with_equals_at_and_comma_reaches_the_stage(
    project: Path,
) -> None:
    value = "reviews: a=b, c@d"
    run(project, "git", "add", "-A")
    run(project, "git", "commit", "-qm", "before experiment", check=False)

    run(project, "dvc", "exp", "run", "-S", f"dataset.tiny.description='{value}'")

    params = yaml.safe_load((project / "params.yaml").read_text())
    assert params["dataset"]["tiny"]["description"] == value
    card = (project / "data" / "published" / "tiny" / "README.md").read_text()
    assert value in card


def test_exponent_written_value_is_a_float_and_second_repro_is_a_noop(
    project: Path,
) -> None:
    edit_declaration(project, {"dedup.threshold": "9e-1"})
    text = (project / "conf" / "dataset" / "tiny.yaml").read_text()
    (project / "conf" / "dataset" / "tiny.yaml").write_text(
        text.replace("'9e-1'", "9e-1")
    )

    first = repro(project)
    second = repro(project)

    assert "dedup@tiny" not in first  # 9e-1 == 0.9: the param did not change
    assert second == set()
    params = (project / "params.yaml").read_text()
    assert "threshold: 0.9" in params


def test_sigint_in_dedup_keeps_earlier_stages_and_resumes_from_dedup(
    project: Path,
) -> None:
    # drops the shortest reviews, so clean's output changes and dedup must rerun
    edit_declaration(project, {"clean.min_chars": 30})
    proc = subprocess.Popen(
        ["dvc", "repro"],
        cwd=project,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    seen = []
    deadline = time.monotonic() + 300
    for line in proc.stdout:
        seen.append(line)
        if "Running stage 'dedup@tiny'" in line:
            os.killpg(proc.pid, signal.SIGINT)
            break
        assert time.monotonic() < deadline, "".join(seen)
    rest, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0, "".join(seen) + rest

    # Read as DVC reads it (YAML 1.2): PyYAML would take the `off` it writes
    # for a PII action as false.
    lock = YAML(typ="safe").load((project / "dvc.lock").read_text())
    params = yaml.safe_load((project / "params.yaml").read_text())
    assert (
        lock["stages"]["clean@tiny"]["params"]["params.yaml"]["dataset.tiny.clean"]
        == (params["dataset"]["tiny"]["clean"])
    )
    assert not list((project / "data" / "interim" / "tiny").glob(".dedup*"))

    ran = repro(project)
    assert "ingest@tiny" not in ran and "clean@tiny" not in ran
    assert "dedup@tiny" in ran


def test_a_new_dataset_stops_the_run_that_composes_it_and_the_next_builds_it(
    project: Path,
) -> None:
    # Last in this module: it adds a dataset to the shared project.
    declaration = (project / "conf" / "dataset" / "tiny.yaml").read_text()
    (project / "conf" / "dataset" / "tiny2.yaml").write_text(
        declaration.replace("data/raw/tiny/", "data/raw/tiny2/")
    )
    write_reviews(project / "data" / "raw" / "tiny2" / "reviews.csv", rows=30)
    listing = project / "conf" / "config.yaml"
    listing.write_text(
        listing.read_text().replace(
            "  - _self_", "  - dataset@dataset.tiny2: [schema, tiny2]\n  - _self_"
        )
    )

    first = run(project, "dvc", "repro", check=False)
    second = repro(project)

    assert first.returncode != 0
    said = first.stdout + first.stderr
    assert "declared datasets changed (added tiny2)" in said
    assert "run `dvc repro` again" in said
    assert not set(RUNNING.findall(said)) - {"compose"}
    assert {f"{s}@tiny2" for s in STAGES} <= second
    assert not {f"{s}@tiny" for s in STAGES} & second
