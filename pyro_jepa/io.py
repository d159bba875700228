"""Files a run writes: run folders that know they are run folders, atomic writes, settings checks.

A *run folder* holds a marker file (`MARKER`), written before anything else, and a lock file held
for the whole run. `claim_run_folder` enforces the rules every script follows:

* a new run needs a folder that does not exist or is empty;
* ``overwrite=True`` replaces only a folder that holds the marker (so never a folder the library did
  not create), and never one that contains an input of the run (e.g. the data file);
* ``resume=True`` needs a folder that holds the marker;
* a second process claiming a folder that is in use is refused at once;
* if the run fails before it wrote anything, the folder (or the lock file) it created is removed.

`settings_diff` compares the settings a run was started with against a new invocation, so that
``--resume`` refuses to continue a run on other data or with other settings.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path

import numpy as np

MARKER = ".pyro_jepa_run"
LOCK = ".pyro_jepa_run.lock"
MARKER_FORMAT = "pyro_jepa-run-folder-v1"


class RunFolderError(ValueError):
    """The run folder cannot be used as asked (exists, not a run folder, in use, holds the data, ...)."""


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read as a pyro_jepa checkpoint, or does not belong to this run."""


def to_jsonable(obj):
    """Dataclasses, paths, tuples and numpy scalars/arrays as plain JSON values."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(asdict(obj))
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, fsync it, then rename it to ``path``.

    A crash, a full disk or Ctrl-C during the write leaves ``path`` as it was and no temporary
    file behind.
    """
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())  # the bytes are on disk before the rename makes them the file
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` atomically (see `atomic_write`)."""
    atomic_write(path, lambda tmp: tmp.write_text(text))


def write_json(obj, path: str | os.PathLike[str]) -> None:
    """Write ``obj`` (see `to_jsonable`) as indented JSON, atomically."""
    write_text(path, json.dumps(to_jsonable(obj), indent=2) + "\n")


def write_csv(frame, path: str | os.PathLike[str], **kwargs) -> None:
    """Write a pandas frame as CSV (no index unless asked), atomically."""
    kwargs.setdefault("index", False)
    atomic_write(path, lambda tmp: frame.to_csv(tmp, **kwargs))


def _contains(folder: Path, path: Path) -> bool:
    folder, path = folder.resolve(), path.resolve()
    return path == folder or folder in path.parents


def _is_run_folder(path: Path) -> bool:
    return (path / MARKER).is_file()


@dataclass
class RunFolder:
    """A claimed run folder: its path and how to continue the run if it is interrupted.

    ``resume_command`` is the exact command that continues the run (None when the script cannot
    resume); `pyro_jepa.cli` prints it when the run is interrupted.
    """

    path: Path
    resume_command: str | None = None
    created: bool = False
    _lock: object = field(default=None, repr=False)

    def last_checkpoint(self) -> Path | None:
        """The most recently written ``last.pt`` under the folder, if any."""
        found = sorted(self.path.rglob("last.pt"), key=lambda p: p.stat().st_mtime)
        return found[-1] if found else None

    def holds_only_bookkeeping(self) -> bool:
        return {p.name for p in self.path.iterdir()} <= {MARKER, LOCK}


_LAST: list[RunFolder] = []


def last_run_folder() -> RunFolder | None:
    """The run folder this process claimed last (still known after its ``with`` block ends, so an
    interruption message can name it), or None."""
    return _LAST[-1] if _LAST else None


def forget_last_run_folder() -> None:
    _LAST.clear()


def _lock(path: Path) -> object:
    """Take the folder's exclusive lock without waiting; the lock file records the holder's pid."""
    try:
        handle = open(path / LOCK, "a+")
    except OSError as err:  # read-only filesystem, no permission, ...
        raise RunFolderError(f"cannot write in the run folder {path}: {err.strerror or err}") from err
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        if err.errno in (errno.EAGAIN, errno.EACCES):
            raise RunFolderError(
                f"run folder {path} is in use by a run that is still going ({holder}); wait for it to finish, "
                "or choose another --out"
            ) from None
        raise
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}\n")
    handle.flush()
    return handle


def _check_new_folder(path: Path, overwrite: bool, inputs: Iterable[Path]) -> None:
    """Refuse a non-empty folder unless it is a run folder that ``overwrite`` may replace."""
    entries = {p.name for p in path.iterdir()} - {LOCK}
    if not entries:
        return
    if not _is_run_folder(path):
        raise RunFolderError(
            f"{path} is not empty and is not a pyro_jepa run folder (it has no {MARKER} file), so it is never "
            "replaced, even with --overwrite; choose a new or empty folder for --out"
        )
    if not overwrite:
        raise RunFolderError(
            f"run folder {path} already holds results; pass --overwrite to replace it, --resume to continue it, "
            "or --out for a new folder"
        )
    held = [str(p) for p in inputs if _contains(path, Path(p))]
    if held:
        raise RunFolderError(
            f"--overwrite would delete {path}, which holds this run's input {held[0]}; move the input out of it "
            "or choose another --out"
        )
    for entry in path.iterdir():
        if entry.name == LOCK:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _write_marker(path: Path, command: str | None) -> None:
    write_json({"format": MARKER_FORMAT, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": command},
               path / MARKER)


@contextlib.contextmanager
def claim_run_folder(
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    resume: bool = False,
    inputs: Iterable[str | os.PathLike[str]] = (),
    command: str | None = None,
    resume_command: str | None = None,
) -> Iterator[RunFolder]:
    """Create or reopen the run folder ``path`` under the rules of the module docstring.

    ``inputs`` are files the run reads (never deleted by ``overwrite``). ``command`` is recorded in
    the marker; ``resume_command`` is what `pyro_jepa.cli` prints on an interruption. The folder's
    lock is held until the ``with`` block ends.
    """
    path = Path(path)
    if resume and overwrite:
        raise RunFolderError("--resume and --overwrite exclude each other (continue the run folder, or replace it)")
    if path.exists() and not path.is_dir():
        raise RunFolderError(f"--out {path} is a file, not a folder; choose a folder path")
    if resume:
        if not path.is_dir():
            raise RunFolderError(f"cannot resume: {path} does not exist (a mistyped --out?)")
        if not _is_run_folder(path):
            raise RunFolderError(
                f"cannot resume: {path} is not a pyro_jepa run folder (it has no {MARKER} file); "
                "check --out, or start a new run without --resume"
            )
    try:
        path.mkdir(parents=True)  # atomic: of two runs racing for a new folder, exactly one creates it
        created = True
    except FileExistsError:
        created = False
    except OSError as err:
        raise RunFolderError(f"cannot create the run folder {path}: {err.strerror or err}") from err
    lock_existed = (path / LOCK).exists()
    handle = _lock(path)  # on failure another run holds the folder: leave everything as it is
    run = RunFolder(path, resume_command=resume_command, created=created, _lock=handle)
    try:
        if not resume:
            _check_new_folder(path, overwrite, [Path(p) for p in inputs])
            _write_marker(path, command)
    except BaseException:
        _release(run, remove_lock=not lock_existed)
        if created:
            shutil.rmtree(path, ignore_errors=True)
        raise
    _LAST[:] = [run]
    try:
        yield run
    except BaseException:
        nothing_written = path.is_dir() and run.holds_only_bookkeeping()
        _release(run, remove_lock=True)
        if nothing_written and not resume:  # a run that failed before writing anything leaves nothing behind
            if created:
                shutil.rmtree(path, ignore_errors=True)
            else:
                (path / MARKER).unlink(missing_ok=True)
        raise
    _release(run, remove_lock=True)


def claim_work_folder(path: str | os.PathLike[str], **kwargs) -> contextlib.AbstractContextManager[RunFolder]:
    """`claim_run_folder` for scripts whose reruns continue their work folder: resume it when it is a run
    folder already, else start a new one (in a folder that does not exist or is empty)."""
    return claim_run_folder(path, resume=_is_run_folder(Path(path)), **kwargs)


def _release(run: RunFolder, remove_lock: bool) -> None:
    if run._lock is None:
        return
    if remove_lock:
        (run.path / LOCK).unlink(missing_ok=True)
    run._lock.close()  # closing the handle releases the flock
    run._lock = None


def flatten(settings: Mapping, prefix: str = "") -> dict[str, object]:
    """``{"train": {"lr": 1e-3}}`` -> ``{"train.lr": 1e-3}`` (JSON-normalized values)."""
    out: dict[str, object] = {}
    for key, value in to_jsonable(settings).items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out |= flatten(value, f"{name}.")
        else:
            out[name] = value
    return out


def settings_diff(
    stored: Mapping, current: Mapping, may_change: Mapping[str, Callable[[object, object], bool]] | None = None
) -> tuple[list[str], dict[str, tuple[object, object]]]:
    """Compare the settings a run started with (``stored``) and a new invocation's (``current``).

    ``may_change`` maps a flattened key (``"train.epochs"``) to ``allowed(old, new)``. Returns
    ``(refused, changed)``: one readable line per setting that differs and may not, and the
    allowed changes as ``{key: (old, new)}`` (to record them).
    """
    may_change = may_change or {}
    old, new = flatten(stored), flatten(current)
    refused, changed = [], {}
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if a == b:
            continue
        if key in may_change and key in old and key in new and may_change[key](a, b):
            changed[key] = (a, b)
        else:
            refused.append(f"{key}: {a!r} when started, {b!r} now")
    return refused, changed
