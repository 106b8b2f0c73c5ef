"""scripts/reproduce_gpu.sh on this CPU at smoke size: killed mid-run, then resumed by the same command.

The GPU run has 15 minutes in all and 10 per command; what one command finished must survive a cut, and a
second command must make only what is missing. This is that path, end to end: shard import, smoke check,
baselines, the grid and the seeds, one JSON per run, the report.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deberta_edu.ablation import report
from deberta_edu.data.packing import build_dataset, dataset_dir, export_shard
from deberta_edu.facts import data_root

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "reproduce_gpu.sh"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """What `prepare` packs, for the smoke path: BBC's packed rows and topic folders, and the snippets."""
    from deberta_edu.data.sentiment import data_file

    if not (data_root() / "bbc" / "raw").is_dir():
        pytest.skip("the bbc corpus is missing: python -m deberta_edu.corpus fetch bbc")
    folder = tmp_path_factory.mktemp("gpu_bundle")
    build_dataset("bbc", 8000, 128)  # cached after the first time
    export_shard([dataset_dir("bbc", 8000, 128), data_root() / "bbc" / "raw"], folder / "packed-large-bbc.tar.xz")
    shutil.copy(data_file(), folder / "movieReviewSnippets_GroundTruth.txt")
    return folder


def _command(bundle: Path, tmp_path: Path, out: Path, log):
    env = {**os.environ, "REPRO_SMOKE": "1", "BUNDLE": str(bundle), "DATA_DIR": str(tmp_path / "data"),
           "BENCH": "0", "PYTHON": sys.executable, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(["bash", str(SCRIPT), "run", str(out)], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


def test_a_run_killed_midway_keeps_what_finished_and_the_same_command_makes_the_rest(bundle, tmp_path):
    out = tmp_path / "out"
    runs = out / "ablation-smoke" / "runs"
    with open(tmp_path / "first.log", "w") as log:
        first = _command(bundle, tmp_path, out, log)
        deadline = time.monotonic() + 400
        while len(list(runs.glob("*.json"))) < 2 and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert first.poll() is None, "the first command ended before it could be cut: " + (
            tmp_path / "first.log").read_text()[-3000:]
        os.killpg(first.pid, signal.SIGKILL)  # the shell, tee, python and its workers: a cut as hard as a lost machine
        first.wait()
    kept = {p.name: p.read_bytes() for p in runs.glob("*.json")}
    assert len(kept) >= 2 and all(json.loads(data)["run"] for data in kept.values())  # whole files only
    assert len(kept) < 15, "the first command was not cut mid-run"
    with open(tmp_path / "second.log", "w") as log:
        second = _command(bundle, tmp_path, out, log)
        assert second.wait(timeout=600) == 0, (tmp_path / "second.log").read_text()[-3000:]
    text = (tmp_path / "second.log").read_text()
    assert "[smoke] deberta" in text  # the smoke check runs first in every command
    results = report.load_results(out / "ablation-smoke")
    assert results["complete"] and len(results["runs"]) == 15 and len(results["commands"]) == 2
    for name, data in kept.items():
        assert (runs / name).read_bytes() == data, f"{name} was made again instead of kept"
    assert "reproduction complete" in text and (out / "run.log").exists()


def test_usage_prints_the_comment_block_and_no_code():
    """Without arguments the script prints its header, every line of it, and not the shell code after it."""
    done = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, cwd=ROOT)
    lines = SCRIPT.read_text().splitlines()[1:]  # after the #! line
    header = lines[: next(i for i, line in enumerate(lines) if not line.startswith("#"))]
    shown = done.stdout.splitlines()
    assert done.returncode == 2 and len(shown) == len(header) and not any("set -e" in line for line in shown)
    assert shown[-1].startswith("only: fit the smoke budget too")
