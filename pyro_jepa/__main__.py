"""Use a trained model from the command line: embed or predict the rows of a CSV/Parquet file.

    python -m pyro_jepa embed RUN --data new.csv --out emb.parquet
    python -m pyro_jepa predict RUN --data new.csv --out pred.csv --coverage 0.8

RUN is a run folder of the main job (``experiments/var_t_jepa.py --out RUN``) or a model folder
inside it. The file is read in chunks of ``--batch-rows`` rows and written as it goes, so memory does
not grow with the number of rows. The output has one row per input row, in order: the ID columns
(``--id``; default: the columns the run dropped as non-features, else ``row``, the 0-based data row),
then the embedding columns ``<feature>__<k>`` or ``prediction`` (and ``proba_<class>``), then
``uncertainty`` and, with ``--coverage``/``--risk``, ``abstain``. Errors are one ``error:`` line (exit 2).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd

from . import cli, io

OUTPUT_TYPES = (".csv", ".parquet")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m pyro_jepa", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = p.add_subparsers(dest="command", required=True)
    embed = commands.add_parser("embed", help="embeddings (posterior means) and latent uncertainty per row")
    predict = commands.add_parser("predict", help="predictions of the run's downstream model, with abstention")
    for sub in (embed, predict):
        sub.add_argument("run", type=Path, help="run folder (the main job's --out) or a model folder inside it")
        sub.add_argument("--data", type=Path, required=True, help="CSV (.csv, .csv.gz) or Parquet file with the training columns")
        sub.add_argument("--out", type=Path, required=True, help=f"output file ({' or '.join(OUTPUT_TYPES)})")
        sub.add_argument("--method", default="var-t-jepa", help="which of the run's models (default: var-t-jepa)")
        sub.add_argument("--id", help="comma-separated columns copied to the output (default: the run's dropped columns, else 'row')")
        sub.add_argument("--na-values", help="comma-separated cell texts that mean 'missing' (as in the main job)")
        sub.add_argument("--batch-rows", type=int, default=10_000, help="rows read and scored at a time (default: 10000)")
        sub.add_argument("--device", default="cpu", help="cpu (default), cuda, auto, ...")
        sub.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
        sub.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
        sub.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    rule = predict.add_mutually_exclusive_group()
    rule.add_argument("--coverage", type=float, help="abstain on rows more uncertain than the validation rows' COVERAGE quantile")
    rule.add_argument("--risk", type=float, help="abstain so that the validation rows kept have at most this error rate (empirical)")
    predict.add_argument("--predictor", help="which saved predictor (default: the best on the validation rows)")
    predict.add_argument("--probabilities", action="store_true", help="also write proba_<class> columns")
    args = p.parse_args(argv)
    if args.batch_rows < 1:
        p.error(f"--batch-rows must be at least 1, got {args.batch_rows}")
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads must be at least 1, got {args.threads}")
    if args.out.suffix.lower() not in OUTPUT_TYPES:
        p.error(f"--out {args.out}: the file name must end in {' or '.join(OUTPUT_TYPES)}")
    args.id = cli.split_names(args.id)
    args.na_values = cli.split_names(args.na_values) or []
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the command line; user errors end with one ``error:`` line and exit 2 (`pyro_jepa.cli`)."""
    return cli.run(_main, argv)


def _main(argv: list[str] | None) -> int:
    args = parse_args(argv)
    check_output(args.out, args.data, args.overwrite)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    from .data.loaders import ExtraColumnsWarning, UnseenCategoriesWarning, iter_table, unseen_categories_message
    from .run import load_run

    started = time.perf_counter()
    run = load_run(args.run, args.method, args.device)
    rule = args.command == "predict" and (args.coverage is not None or args.risk is not None)
    limit = run.threshold(args.coverage, args.risk, args.predictor) if rule else None

    def score(chunk: pd.DataFrame) -> pd.DataFrame:
        if args.command == "embed":
            return run.embed_frame(chunk)
        return run.predict(chunk, args.coverage, args.risk, args.predictor, args.probabilities)
    pre = run.preprocessor
    columns, total, chunks = iter_table(args.data, args.batch_rows, args.na_values, text_columns=pre.text_columns)
    ids = id_columns(args.id, columns, pre)
    lacking = [n for n in (*pre.source_numerical, *pre.schema.categorical) if n not in columns]
    if lacking:
        raise ValueError(f"{args.data} lacks the training feature column(s) {lacking}; add them (empty cells count as missing)")
    extra = [c for c in pre.extra_columns(columns) if c not in ids]
    if extra:
        print(f"warning: column(s) {extra} were not in the training data and are ignored", file=sys.stderr)

    unseen, counts = Counter(), Counter()

    def rows() -> Iterator[pd.DataFrame]:
        with warnings.catch_warnings():  # reported once below, not once per chunk
            warnings.simplefilter("ignore", ExtraColumnsWarning)
            warnings.simplefilter("ignore", UnseenCategoriesWarning)
            for chunk in chunks:
                unseen.update(pre.unseen_categories(chunk))
                frame = score(chunk)
                counts["rows"] += len(frame)
                counts["abstained"] += int(frame["abstain"].sum()) if "abstain" in frame else 0
                yield with_ids(frame, chunk, ids)

    show = not args.no_progress
    total = total if total is not None or not show else count_csv_rows(args.data)
    io.atomic_write(args.out, lambda tmp: write_frames(rows(), tmp, args.out.suffix.lower(), total, show))
    if unseen:
        print(f"warning: {unseen_categories_message(dict(unseen))}", file=sys.stderr)
    seconds = time.perf_counter() - started
    line = f"wrote {counts['rows']} rows to {args.out} in {seconds:.1f} s ({counts['rows'] / seconds:.0f} rows/s)"
    if limit is not None:
        line += f"; abstained on {counts['abstained']} ({counts['abstained'] / max(counts['rows'], 1):.1%}), score above {limit:.6g}"
    print(line, file=sys.stderr)
    return 0


def check_output(out: Path, data: Path, overwrite: bool) -> None:
    """Refuse to replace a file without --overwrite, and never write over the input."""
    if out.exists() and out.resolve() == data.resolve():
        raise ValueError(f"--out {out} is the input file; choose another output file")
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; pass a file name ending in {' or '.join(OUTPUT_TYPES)}")
    if out.exists() and not overwrite:
        raise ValueError(f"--out {out} exists; pass --overwrite to replace it, or choose another file")
    if not out.parent.is_dir():
        raise ValueError(f"--out {out}: the folder {out.parent} does not exist")


def id_columns(requested: list[str] | None, columns: list, preprocessor) -> list:
    """The input columns copied to the output: ``requested``, else the run's dropped (non-feature) columns present."""
    if requested is not None:
        lacking = [c for c in requested if c not in columns]
        if lacking:
            raise ValueError(f"--id column(s) {lacking} not in the data; available: {columns}")
        return requested
    return [c for c in preprocessor.drop if c in columns]


def with_ids(frame: pd.DataFrame, chunk: pd.DataFrame, ids: list) -> pd.DataFrame:
    """``frame`` with the ID columns of ``chunk`` in front (or ``row``, the 0-based data row)."""
    front = chunk[ids] if ids else pd.DataFrame({"row": chunk.index}, index=chunk.index)
    clash = [c for c in front.columns if c in frame.columns]
    if clash:
        raise ValueError(f"ID column(s) {clash} have the name of an output column; pass other --id columns")
    return pd.concat([front, frame], axis=1)


def count_csv_rows(path: Path) -> int | None:
    """Data lines of an uncompressed CSV (for the progress bar; a quoted line break counts twice), else None."""
    if path.suffix.lower() != ".csv":
        return None
    lines, last = 0, b"\n"
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 24), b""):
            lines, last = lines + block.count(b"\n"), block[-1:]
    return lines + (last != b"\n") - 1


def write_frames(frames: Iterator[pd.DataFrame], path: Path, kind: str, total: int | None, progress: bool) -> None:
    """Write ``frames`` one after the other to ``path`` as CSV or Parquet (``kind``), with a row progress bar."""
    from tqdm.auto import tqdm

    with tqdm(total=total, unit="rows", unit_scale=True, disable=not progress or None) as bar:
        (_write_parquet if kind == ".parquet" else _write_csv)(frames, path, bar.update)


def _write_csv(frames: Iterator[pd.DataFrame], path: Path, written: Callable[[int], object]) -> None:
    with open(path, "w", newline="") as handle:
        for i, frame in enumerate(frames):
            frame.to_csv(handle, header=i == 0, index=False)
            written(len(frame))


def _write_parquet(frames: Iterator[pd.DataFrame], path: Path, written: Callable[[int], object]) -> None:
    """One row group per frame; every frame must fit the first one's column types."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer = None
    try:
        for frame in frames:
            if writer is None:
                table = pa.Table.from_pandas(frame, preserve_index=False)
                writer = pq.ParquetWriter(path, table.schema)
            else:
                try:
                    table = pa.Table.from_pandas(frame, schema=writer.schema, preserve_index=False)
                except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
                    raise ValueError(f"an ID column changes type between rows ({err}); pass --id columns of one type") from err
            writer.write_table(table)
            written(len(frame))
    finally:
        if writer is not None:
            writer.close()


if __name__ == "__main__":
    sys.exit(main())
