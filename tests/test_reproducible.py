"""The README's main command, run twice: the same numbers, byte for byte (timings aside)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.test_experiment import ROOT

TIMINGS = {"pretrain_seconds", "seconds_total"}


def without_timings(value):
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if k not in TIMINGS}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


@pytest.mark.slow
def test_two_default_runs_give_identical_metrics(tmp_path):
    metrics = []
    for name in ("first", "second"):
        command = [sys.executable, str(ROOT / "experiments" / "var_t_jepa.py"), "--no-progress", "--out", str(tmp_path / name)]
        done = subprocess.run(command, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                              timeout=3600)
        assert done.returncode == 0, done.stderr[-2000:]
        metrics.append(without_timings(json.loads((tmp_path / name / "metrics.json").read_text())))
    assert json.dumps(metrics[0], sort_keys=True) == json.dumps(metrics[1], sort_keys=True)
    assert (tmp_path / "first" / "results.csv").read_bytes() == (tmp_path / "second" / "results.csv").read_bytes()
