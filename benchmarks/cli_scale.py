"""Wall time and peak memory of ``python -m pyro_jepa embed|predict`` on large generated SIM files.

    python benchmarks/cli_scale.py RUN --rows 100000,1000000 --work /tmp/cli_scale --out docs/results/run_api_scale.csv

For each row count N: writes a CSV with the SIM schema (``make_sim(N, seed=1)`` plus an ``id``
column, written 100,000 rows at a time), then runs each command once under ``/usr/bin/time -v`` and
records its wall time, peak resident memory (maximum RSS) and the output's size. The machine's load
average (``/proc/loadavg``) is recorded before and after each command. Memory that does not grow
with N (beyond the output, which goes to disk) is the point: the file is read, scored and written
in chunks of ``--batch-rows``.

Note: ``make_sim`` draws its class prototypes after the rows' classes, so a table of another size
has other prototypes than the 10,000-row SIM a run trained on; the predictions on these rows measure
speed and memory, not accuracy.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from pyro_jepa import cli, io
from pyro_jepa.data import make_sim

WRITE_CHUNK = 100_000
COMMANDS = {
    "predict": ["predict", "--coverage", "0.8", "--out", "{work}/pred-{rows}.csv"],
    "embed": ["embed", "--out", "{work}/emb-{rows}.parquet"],
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="a run folder of the main job on SIM")
    p.add_argument("--rows", type=cli.int_list, default="100000,1000000", help="comma-separated row counts")
    p.add_argument("--commands", default="predict,embed", help=f"comma-separated subset of {list(COMMANDS)}")
    p.add_argument("--work", type=Path, required=True, help="folder for the generated inputs and the outputs (GBs)")
    p.add_argument("--out", type=Path, required=True, help="CSV of the measurements")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the command (default 1)")
    p.add_argument("--batch-rows", type=int, default=10_000, help="the command's --batch-rows")
    args = p.parse_args(argv)
    args.commands = [c for c in args.commands.split(",") if c]
    unknown = [c for c in args.commands if c not in COMMANDS]
    if unknown:
        p.error(f"unknown commands {unknown}; choose from {list(COMMANDS)}")
    return args


def write_sim_csv(path: Path, rows: int) -> None:
    """SIM rows with an ``id`` column, written in chunks (atomically: a partial file never looks finished)."""
    table = make_sim(rows, seed=1)
    table.insert(0, "id", [f"row-{i:07d}" for i in range(rows)])

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as handle:
            for start in range(0, rows, WRITE_CHUNK):
                table.iloc[start : start + WRITE_CHUNK].to_csv(handle, header=start == 0, index=False)

    io.atomic_write(path, write)


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def measure(argv: list[str]) -> dict:
    """Run ``python -m pyro_jepa ARGV`` under /usr/bin/time -v; wall seconds and max RSS in MiB."""
    command = ["/usr/bin/time", "-v", sys.executable, "-m", "pyro_jepa", *argv]
    load_before = load_average()
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))
    summary = [line for line in done.stderr.splitlines() if line.startswith("wrote ")]
    return {"wall_s": round(wall, 1), "max_rss_mib": round(rss / 1024), "load_before": load_before,
            "load_after": load_average(), "summary": summary[-1] if summary else ""}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    records = []
    for rows in args.rows:
        data = args.work / f"sim-{rows}.csv"
        if not data.is_file():
            write_sim_csv(data, rows)
        for name in args.commands:
            tail = [part.format(work=args.work, rows=rows) for part in COMMANDS[name]]
            out = Path(tail[tail.index("--out") + 1])
            argv_ = [tail[0], str(args.run), "--data", str(data), *tail[1:], "--id", "id", "--threads", str(args.threads),
                     "--batch-rows", str(args.batch_rows), "--no-progress", "--overwrite"]
            record = {"command": name, "rows": rows, **measure(argv_), "input_mib": round(data.stat().st_size / 2**20),
                      "output_mib": round(out.stat().st_size / 2**20), "argv": "python -m pyro_jepa " + " ".join(argv_)}
            print(record, flush=True)
            records.append(record)
            out.unlink()  # GBs; measured already
    io.write_csv(pd.DataFrame(records), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
