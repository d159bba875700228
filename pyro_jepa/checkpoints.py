"""Checkpoint files: tagged dicts of tensors, written atomically, read without executing code.

Kept apart from the engine (`pyro_jepa.train`) so that saved downstream predictors and saved runs
(`pyro_jepa.evaluate.downstream`, `pyro_jepa.run`) read and write them without importing it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from . import io
from .io import CheckpointError

CHECKPOINT_FORMAT = "pyro_jepa-checkpoint-v1"


def save_checkpoint(state: dict, path: Path) -> None:
    """Write atomically: a crash, a full disk or an interruption mid-write leaves the previous file
    intact and no partial file behind."""
    io.atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu", format_tag: str = CHECKPOINT_FORMAT) -> dict:
    """Load a checkpoint (a dict tagged ``format_tag``) without executing code (``weights_only=True``), with a clear error."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is not a readable pyro_jepa checkpoint (the file is empty)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for truncated or foreign files
        raise CheckpointError(f"{path} is not a readable pyro_jepa checkpoint ({type(err).__name__}: {err})") from err
    if not isinstance(state, dict) or state.get("format") != format_tag:
        raise CheckpointError(f"{path} is not a pyro_jepa checkpoint (missing format tag {format_tag!r})")
    return state


def holds_state(saved: dict, state: dict) -> bool:
    """Whether the state dict ``saved`` holds every tensor of ``state`` with equal values (compared on the CPU)."""
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    return tensors.keys() <= saved.keys() and all(torch.equal(saved[k].cpu(), v.detach().cpu()) for k, v in tensors.items())
