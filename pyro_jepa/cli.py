"""What every command-line script shares: one-line errors, interruptions that say how to resume.

A script's ``if __name__ == "__main__"`` block calls ``sys.exit(cli.run(main))``. Then

* a failure the user can cause (bad data, bad flags, an unusable run folder, a diverged run, a full
  disk) prints ``error: <cause and what to do>`` and exits with 2 (1 for a diverged run), without a
  traceback; set ``PYRO_JEPA_DEBUG=1`` to see the traceback;
* Ctrl-C (exit 130) and SIGTERM (exit 143) print one line naming the last good checkpoint of the
  run folder the script claimed (`pyro_jepa.io.claim_run_folder`) and the exact command that
  continues the run.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Sequence

from . import io

USER_ERRORS = (ValueError, FileNotFoundError, FloatingPointError, OSError, io.CheckpointError)
EXIT_USER_ERROR, EXIT_DIVERGED, EXIT_SIGINT, EXIT_SIGTERM = 2, 1, 130, 143


class Terminated(BaseException):
    """Raised in the main thread when the process receives SIGTERM (like KeyboardInterrupt for SIGINT)."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated(signum)


def debugging() -> bool:
    """``PYRO_JEPA_DEBUG`` set to anything but empty or 0: show tracebacks."""
    return os.environ.get("PYRO_JEPA_DEBUG", "") not in ("", "0")


def command_line(script: str, argv: Sequence[str] | None) -> str:
    """The shell command that ran ``script`` with ``argv`` (default: this process's arguments)."""
    args = list(sys.argv[1:] if argv is None else argv)
    return shlex.join(["python", script, *args])


def resume_command(script: str, argv: Sequence[str] | None, out: os.PathLike | str) -> str:
    """The command that continues a run: the same flags without ``--overwrite``, plus ``--resume --out OUT``."""
    args = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--overwrite"]
    if "--resume" not in args:
        args.append("--resume")
    if "--out" not in args and not any(a.startswith("--out=") for a in args):
        args += ["--out", str(out)]
    return shlex.join(["python", script, *args])


def interruption_message(signal_name: str) -> str:
    """One line: what was interrupted, where the last good checkpoint is, how to continue."""
    run = io.last_run_folder()
    if run is None:
        return f"interrupted ({signal_name}) before a run folder was written; nothing to resume"
    checkpoint = run.last_checkpoint()
    where = (
        f"the last good checkpoint is {checkpoint}"
        if checkpoint is not None
        else f"no checkpoint had been written yet in {run.path}"
    )
    how = f"; continue with: {run.resume_command}" if run.resume_command else ""
    return f"interrupted ({signal_name}); {where}{how}"


def run(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Call ``main(argv)`` under the rules of the module docstring; returns the exit code."""
    io.forget_last_run_folder()
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if in_main_thread else None
    try:
        return main(argv)
    except (KeyboardInterrupt, Terminated) as err:
        if debugging():
            raise
        sigterm = isinstance(err, Terminated)
        print(interruption_message("SIGTERM" if sigterm else "Ctrl-C"), file=sys.stderr)
        return EXIT_SIGTERM if sigterm else EXIT_SIGINT
    except USER_ERRORS as err:
        if debugging():
            raise
        print(f"error: {describe(err)}", file=sys.stderr)
        return EXIT_DIVERGED if isinstance(err, FloatingPointError) else EXIT_USER_ERROR
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


def describe(err: BaseException) -> str:
    """An exception as one readable sentence (OS errors with their file)."""
    if isinstance(err, OSError) and not isinstance(err, io.RunFolderError) and err.strerror:
        where = f" ({err.filename})" if err.filename else ""
        return f"cannot write or read a file{where}: {err.strerror}; check free disk space and permissions"
    return str(err)


def split_names(value: str | None) -> list[str] | None:
    """Column names from a comma-separated flag value; ``\\,`` is a comma inside a name.

    Names are not stripped here: `pyro_jepa.data.load_dataset` matches a name exactly first and
    only then without surrounding spaces, so ``"a, b"`` and a column named ``" a"`` both work.
    """
    if value is None:
        return None
    names, current, escaped = [], [], False
    for char in value:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ",":
            names.append("".join(current))
            current = []
        else:
            current.append(char)
    names.append("".join(current))
    return [n for n in names if n.strip()]


def require_positive(p: argparse.ArgumentParser, option: str, value: float | None) -> None:
    """``p.error`` unless ``value`` of ``option`` is unset (None) or a positive number (nan is refused)."""
    if value is not None and not value > 0:
        p.error(f"{option} must be a positive number, got {value}")


def config_field(config_cls: type, name: str, text: str, flag: str) -> object:
    """``text`` parsed as the type of the default of field ``name`` of dataclass ``config_cls`` (a bool
    takes true/false/1/0); ``flag`` starts each error message. Only number, text and bool fields."""
    defaults = {f.name: getattr(config_cls(), f.name) for f in dataclasses.fields(config_cls)}
    if name not in defaults:
        raise ValueError(f"{flag}: {config_cls.__name__} has no field {name!r}; it has {sorted(defaults)}")
    kind = type(defaults[name])
    if kind is bool:
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"{flag}: {name} takes true or false")
        return text.lower() in ("true", "1")
    if kind not in (int, float, str):
        raise ValueError(f"{flag}: {name} is a {kind.__name__}, which this option cannot set")
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"{flag}: {name} takes a {kind.__name__}, got {text!r}") from None


def config_fields(config_cls: type, items: Sequence[str], flag: str = "--set") -> dict[str, object]:
    """``["dim=64", ...]`` as ``{"dim": 64}`` for fields of dataclass ``config_cls`` (`config_field`; the later
    of two settings wins), then checked by the config itself; a ValueError names what is wrong."""
    sets: dict[str, object] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"{flag} {item!r}: expected FIELD=VALUE, FIELD a field of {config_cls.__name__}")
        sets[name] = config_field(config_cls, name, text, f"{flag} {item!r}")
    config_cls(**sets)  # the config's own checks, before anything is written
    return sets


def int_list(value: str) -> list[int]:
    """An argparse ``type`` for a comma-separated list of whole numbers (``"0,1,2"`` -> ``[0, 1, 2]``).

    Empty items are skipped; a list with no number, or an item that is not a whole number, is an
    argparse error naming the item, not a traceback.
    """
    return _number_list(value, int, "whole number")


def float_list(value: str) -> list[float]:
    """`int_list` for real numbers (``"0,0.5,16"`` -> ``[0.0, 0.5, 16.0]``)."""
    return _number_list(value, float, "number")


def _number_list(value: str, kind: type, what: str) -> list:
    numbers = []
    for item in (item.strip() for item in value.split(",")):
        if not item:
            continue
        try:
            numbers.append(kind(item))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {what}s, got {item!r} in {value!r}") from None
    if not numbers:
        raise argparse.ArgumentTypeError(f"expected at least one {what}, got {value!r}")
    return numbers
