"""A real ``kill -9`` of the main job, then ``--resume``: same seed on CPU, same metrics as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--max-rows", "400", "--epochs", "4", "--downstream-epochs", "2", "--predictors", "mlp",
        "--posterior-samples", "20", "--device", "cpu", "--no-progress", "--seed", "2"]  # fmt: skip


def job(out: Path, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "experiments" / "var_t_jepa.py"), *ARGS, "--out", str(out), *extra]


def run(command: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow
def test_kill_9_then_resume_matches_an_uninterrupted_run(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    run(job(straight))

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    victim = subprocess.Popen(job(killed), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = killed / "checkpoints" / "var-t-jepa" / "last.pt"
    deadline = time.monotonic() + 600
    while not last.exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert victim.poll() is None, "the job ended before its first checkpoint; nothing to kill"
    victim.send_signal(signal.SIGKILL)  # kill -9: no cleanup, no flush
    victim.wait()
    assert not (killed / "metrics.json").exists()

    run(job(killed, "--resume"))
    a, b = (json.loads((folder / "metrics.json").read_text()) for folder in (straight, killed))
    assert a["downstream"] == b["downstream"]
    for method in ("Var-T-JEPA", "T-JEPA"):
        assert a["methods"][method]["best_epoch"] == b["methods"][method]["best_epoch"]
        assert a["methods"][method]["collapse_test"] == b["methods"][method]["collapse_test"]
    assert (straight / "results.csv").read_bytes() == (killed / "results.csv").read_bytes()
