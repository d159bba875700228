"""Run folders that know they are run folders, validated resume, and how scripts end (issue 11).

Where the behaviour is the command line's (overwrite, concurrent runs, signals), the tests run the
main job as a real subprocess on real files.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pyro_jepa import cli, io
from pyro_jepa.data.registry import sha256_file
from pyro_jepa.io import LOCK, MARKER, RunFolderError, claim_run_folder
from pyro_jepa.train import load_checkpoint
from tests.test_experiment import ROOT, load_script
from tests.test_robustness import snapshot

def tiny(epochs: int = 1) -> list[str]:
    return ["--max-rows", "150", "--epochs", str(epochs), "--methods", "t-jepa", "--predictors", "mlp",
            "--downstream-epochs", "1", "--no-progress", "--device", "cpu"]  # fmt: skip


TINY = tiny()
# Long enough to be still training when a test signals it (stopped long before the end).
LONG = ["--max-rows", "150", "--epochs", "5000", "--methods", "t-jepa", "--predictors", "mlp", "--no-progress", "--device", "cpu"]


@pytest.fixture(scope="module")
def script():
    return load_script("var_t_jepa")


def table(path: Path, n: int = 150, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    y = rng.choice(["pos", "neg"], n)
    pd.DataFrame({"a": rng.normal(size=n) + (y == "pos"), "b": rng.normal(size=n), "c": rng.choice(list("xyz"), n), "y": y}).to_csv(
        path, index=False
    )
    return path


def job(*argv: str) -> list[str]:
    return [sys.executable, str(ROOT / "experiments" / "var_t_jepa.py"), *argv]


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYRO_JEPA_DEBUG": ""}


def finish(command: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=ROOT, env=environment(), capture_output=True, text=True, timeout=timeout)


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, f"the job ended before {path} appeared: {process.stderr.read()}"
        assert time.monotonic() < deadline, f"{path} did not appear in {timeout} s"
        time.sleep(0.1)


# --- --overwrite and the data ------------------------------------------------------------------------


def test_overwrite_never_deletes_a_folder_that_holds_the_data(tmp_path):
    folder = tmp_path / "v"
    folder.mkdir()
    data = table(folder / "data.csv")
    (folder / "notes.txt").write_text("mine\n")
    before = snapshot(folder)
    done = finish(job("--data", str(data), "--label", "y", "--out", str(folder), "--overwrite", *TINY))
    assert done.returncode == 2, done.stderr
    assert "is not a pyro_jepa run folder" in done.stderr and "never replaced, even with --overwrite" in done.stderr
    assert "Traceback" not in done.stderr and snapshot(folder) == before

    # A real run folder that also holds the input: --overwrite still refuses.
    run = tmp_path / "run"
    run.mkdir()
    (run / MARKER).write_text("{}\n")
    inside = table(run / "data.csv")
    before = snapshot(run)
    done = finish(job("--data", str(inside), "--label", "y", "--out", str(run), "--overwrite", *TINY))
    assert done.returncode == 2 and f"which holds this run's input {inside}" in done.stderr
    assert snapshot(run) == before


def test_overwrite_replaces_only_run_folders(tmp_path):
    run = tmp_path / "run"
    with claim_run_folder(run, command="first"):
        (run / "metrics.json").write_text("{}")
        (run / "checkpoints").mkdir()
    assert json.loads((run / MARKER).read_text())["command"] == "first" and not (run / LOCK).exists()
    with pytest.raises(RunFolderError, match="already holds results; pass --overwrite"):
        with claim_run_folder(run):
            pass
    with claim_run_folder(run, overwrite=True, command="second"):
        assert sorted(p.name for p in run.iterdir()) == [MARKER, LOCK]
    # The working folder (not a run folder) is never replaced: `--out . --overwrite` is safe.
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(RunFolderError, match="not a pyro_jepa run folder"):
        with claim_run_folder(tmp_path, overwrite=True):
            pass
    assert (tmp_path / "keep.txt").read_text() == "x"


def test_resume_needs_an_existing_run_folder(tmp_path):
    with pytest.raises(RunFolderError, match="does not exist"):
        with claim_run_folder(tmp_path / "mistyped", resume=True):
            pass
    assert not (tmp_path / "mistyped").exists()
    (tmp_path / "other" / "results.csv").parent.mkdir()
    (tmp_path / "other" / "results.csv").write_text("a\n1\n")
    before = snapshot(tmp_path / "other")
    with pytest.raises(RunFolderError, match="not a pyro_jepa run folder"):
        with claim_run_folder(tmp_path / "other", resume=True):
            pass
    assert snapshot(tmp_path / "other") == before


def test_out_that_is_a_file_or_below_one_is_refused(script, tmp_path, capsys):
    afile = tmp_path / "file.txt"
    afile.write_text("x")
    for out in (afile, afile / "below"):
        assert script.main([*TINY, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and ("is a file, not a folder" in err or "cannot create the run folder" in err)
    assert afile.read_text() == "x"


def test_a_failed_data_load_leaves_no_folder_behind(script, tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,y\n1,p\n2,p\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    for out in (tmp_path / "new", empty):
        assert script.main(["--data", str(bad), "--label", "y", "--out", str(out), *TINY]) == 2
        assert "single class" in capsys.readouterr().err
    assert not (tmp_path / "new").exists() and list(empty.iterdir()) == []


# --- --resume checks what it continues ---------------------------------------------------------------


def test_resume_refuses_other_data_or_seed_and_records_allowed_changes(script, tmp_path, capsys):
    data, other = table(tmp_path / "a.csv"), table(tmp_path / "b.csv", seed=1)
    run = tmp_path / "run"
    assert script.main(["--data", str(data), "--label", "y", "--out", str(run), *TINY]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["dataset"]["name"] == "a" and config["dataset"]["source"] == str(data)
    capsys.readouterr()
    before = snapshot(run)
    assert script.main(["--data", str(other), "--label", "y", "--out", str(run), "--resume", *TINY]) == 2
    assert "--resume refused" in capsys.readouterr().err
    assert script.main(["--data", str(data), "--label", "y", "--out", str(run), "--resume", "--seed", "7", *TINY]) == 2
    err = capsys.readouterr().err
    assert "train.seed: 0 when started, 7 now" in err and "Traceback" not in err
    assert snapshot(run) == before  # nothing rewritten
    assert script.main(["--data", str(data), "--label", "y", "--out", str(run), "--resume", *tiny(epochs=2)]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["resumes"][0]["changed"] == {"train.epochs": [1, 2]} and config["train"]["epochs"] == 2
    assert config["command"].startswith("python ") and "--resume" not in config["command"]  # the original command


def test_engine_refuses_a_checkpoint_of_another_run_or_without_its_rng(schema, tmp_path):
    from dataclasses import replace

    from pyro_jepa.models import TJEPA
    from pyro_jepa.train import CheckpointError, fit, load_checkpoint, save_checkpoint
    from tests.conftest import make_table
    from tests.test_train import FAST, SMALL

    train, val = make_table(schema, 64, seed=1), make_table(schema, 32, seed=2)
    fit(TJEPA(schema, SMALL), train, val, FAST, tmp_path)
    with pytest.raises(CheckpointError, match=r"train\.lr: 0\.001 when started, 0\.002 now"):
        fit(TJEPA(schema, SMALL), train, val, replace(FAST, lr=2e-3), tmp_path, resume=True)
    with pytest.raises(CheckpointError, match=r"other settings or data: data: "):
        fit(TJEPA(schema, SMALL), make_table(schema, 64, seed=3), val, FAST, tmp_path, resume=True)
    state = load_checkpoint(tmp_path / "last.pt")
    del state["rng"]
    save_checkpoint(state, tmp_path / "last.pt")
    with pytest.raises(CheckpointError, match=r"cannot be resumed: it lacks \['rng'\]"):
        fit(TJEPA(schema, SMALL), train, val, FAST, tmp_path, resume=True)


# --- concurrent runs and signals -----------------------------------------------------------------------


@pytest.mark.parametrize("sig, code, name", [(signal.SIGINT, 130, "Ctrl-C"), (signal.SIGTERM, 143, "SIGTERM")])
def test_a_second_run_is_refused_and_a_signal_says_how_to_resume(tmp_path, sig, code, name):
    run = tmp_path / "run"
    # A shell's background job (nohup, `&`, some CI runners) starts with SIGINT ignored, and Python then
    # keeps ignoring it; the user's Ctrl-C reaches a foreground process, so restore that here.
    first = subprocess.Popen(job("--out", str(run), *LONG), cwd=ROOT, env=environment(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        wait_for(run / "checkpoints" / "t-jepa" / "last.pt", first)
        if sig == signal.SIGINT:  # the second run, once: same folder, refused at once
            second = finish(job("--out", str(run), *LONG), timeout=300)
            assert second.returncode == 2 and "is in use by a run that is still going" in second.stderr
        first.send_signal(sig)
        _, err = first.communicate(timeout=300)
    finally:
        first.kill()
    assert first.returncode == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    checkpoint = run / "checkpoints" / "t-jepa" / "last.pt"
    assert lines[0].startswith(f"interrupted ({name}); the last good checkpoint is {checkpoint}; continue with: python ")
    assert f"--out {run}" in lines[0] and lines[0].endswith("--resume")

    assert load_checkpoint(checkpoint)["epoch"] >= 1  # intact
    assert not list(run.rglob("*.tmp")) and not (run / LOCK).exists()


# --- OS errors ---------------------------------------------------------------------------------------


def test_a_full_disk_is_one_error_line_and_leaves_no_partial_file(script, tmp_path, capsys, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(args[1]) if len(args) > 1 else None)

    monkeypatch.setattr(torch, "save", full)
    run = tmp_path / "run"
    assert script.main([*TINY, "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write or read a file") and "No space left on device" in err
    assert not list(run.rglob("*.tmp"))


def test_debug_shows_the_traceback(script, tmp_path, monkeypatch):
    monkeypatch.setenv("PYRO_JEPA_DEBUG", "1")
    with pytest.raises(RunFolderError):
        script.main([*TINY, "--out", str(tmp_path), "--resume"])


def test_column_flags_split_on_unescaped_commas():
    assert cli.split_names(r"a\,b, c,,d") == ["a,b", " c", "d"]
    assert cli.split_names(None) is None
    assert cli.resume_command("x.py", ["--seed", "1", "--overwrite"], "out") == "python x.py --seed 1 --resume --out out"


def test_integer_list_flags_parse_or_name_the_bad_item():
    assert cli.int_list("0, 1,,2") == [0, 1, 2]
    assert cli.int_list("-1,+3") == [-1, 3]
    with pytest.raises(argparse.ArgumentTypeError, match="'x' in '0,x'"):
        cli.int_list("0,x")
    with pytest.raises(argparse.ArgumentTypeError, match="at least one"):
        cli.int_list(" , ")
    assert cli.float_list("0, 0.5,,16") == [0.0, 0.5, 16.0]
    with pytest.raises(argparse.ArgumentTypeError, match="comma-separated numbers, got 'a' in 'a,2'"):
        cli.float_list("a,2")
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=cli.int_list, default="0,1")
    assert parser.parse_args([]).seeds == [0, 1]  # string defaults go through the type too
    with pytest.raises(SystemExit):
        parser.parse_args(["--seeds", "1.5"])


def test_atomic_writes_leave_the_old_file_on_failure(tmp_path):
    path = tmp_path / "metrics.json"
    io.write_json({"a": 1}, path)

    def broken(tmp):
        tmp.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        io.atomic_write(path, broken)
    assert json.loads(path.read_text()) == {"a": 1} and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]
    assert sha256_file(path)
