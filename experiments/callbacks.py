"""Hydra callbacks (registered in conf/config.yaml under hydra.callbacks)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from hydra.experimental.callback import Callback

log = logging.getLogger("transfer_bench")


class SweepSummary(Callback):
    """After a multirun: say which jobs failed (the runner recorded them) and exit non-zero if any did,
    so scripts and CI notice — the other jobs still ran to the end."""

    def on_multirun_end(self, config, **kwargs) -> None:
        path = Path(config.hydra.sweep.dir) / "failures.jsonl"
        if not path.exists():
            log.info("sweep finished: no job failed")
            return
        failures = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
        lines = [f"  job {f['job']} [{' '.join(f['overrides'])}]: {f['error'].splitlines()[0]}" for f in failures]
        msg = f"sweep finished: {len(failures)} job(s) failed (details in {path}):\n" + "\n".join(lines)
        log.error(msg)
        raise SystemExit(1)
