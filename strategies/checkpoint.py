"""Resumable training state, written atomically (a reader never sees half a file) and read back with
torch.load(weights_only=True): tensors and plain Python values only, never arbitrary pickled objects."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

FILE = "trainer_state.pt"


def save(directory: Path, state: dict) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".pt")
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, directory / FILE)  # atomic on POSIX: the old checkpoint or the new, never a mix
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load(directory: Path | None) -> dict | None:
    if directory is None or not (Path(directory) / FILE).is_file():
        return None
    return torch.load(Path(directory) / FILE, weights_only=True, map_location="cpu")
