"""Progress of long work (encoding, training steps, any loop with a known size): a tqdm bar on a terminal;
elsewhere (a sweep's log, CI, output piped to a file) one plain line every 10% instead of a bar redrawn
in place, which a log file would record as thousands of carriage returns.

    with progress.bar(len(texts), "encode", unit="text") as bar:
        for batch in batches:
            ...
            bar.update(len(batch), loss=0.31)   # keyword values appear after the rate

The runner turns it on or off for the whole process from the `progress` config key (set_enabled); strategies
only call bar(). Work that ends within DELAY_S seconds shows nothing, so short steps do not clutter logs.
"""

from __future__ import annotations

import logging
import sys
import time

from tqdm.auto import tqdm

log = logging.getLogger("transfer_bench.progress")

ENABLED = True  # set_enabled(cfg.progress) by the runner
DELAY_S = 2.0  # no output for work that ends sooner
LINE_EVERY = 0.10  # without a terminal: one line per 10% of the work
# The plain line: what tqdm's bar shows, without the bar itself.
LINE_FORMAT = "{desc}: {percentage:3.0f}% {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"


def set_enabled(on: bool) -> None:
    global ENABLED
    ENABLED = bool(on)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class _Lines:
    """tqdm's numbers (rate, ETA) as one log line each time another LINE_EVERY of the total is done."""

    def __init__(self, total: int, desc: str, unit: str):
        self.total, self.desc, self.unit = max(int(total), 1), desc, unit
        self.n, self.start, self.next_at = 0, time.perf_counter(), LINE_EVERY
        self.postfix = ""

    def update(self, n: int = 1, **postfix) -> None:
        self.n += n
        if postfix:
            self.postfix = ", ".join(f"{k}={_fmt(v)}" for k, v in postfix.items())
        done = self.n / self.total
        if done + 1e-9 < self.next_at:
            return
        while self.next_at <= done + 1e-9:
            self.next_at += LINE_EVERY
        elapsed = time.perf_counter() - self.start
        if elapsed < DELAY_S:
            return
        line = tqdm.format_meter(self.n, self.total, elapsed, prefix=self.desc, unit=self.unit,
                                 unit_scale=False, postfix=self.postfix or None, bar_format=LINE_FORMAT)
        log.info(line)

    def close(self) -> None:
        pass


class _Bar:
    def __init__(self, total: int, desc: str, unit: str):
        self._bar = tqdm(total=total, desc=desc, unit=unit, delay=DELAY_S, leave=False, dynamic_ncols=True,
                         file=sys.stderr)

    def update(self, n: int = 1, **postfix) -> None:
        if postfix:
            self._bar.set_postfix({k: _fmt(v) for k, v in postfix.items()}, refresh=False)
        self._bar.update(n)

    def close(self) -> None:
        self._bar.close()


class _Off:
    def update(self, n: int = 1, **postfix) -> None:
        pass

    def close(self) -> None:
        pass


class bar:  # noqa: N801 — used like a function: `with progress.bar(...) as b`
    """Progress over `total` units of work: a bar on a terminal, plain lines elsewhere, nothing when off."""

    def __init__(self, total: int, desc: str, unit: str = "it"):
        if not ENABLED or total <= 0:
            self._impl = _Off()
        elif sys.stderr.isatty():
            self._impl = _Bar(total, desc, unit)
        else:
            self._impl = _Lines(total, desc, unit)

    def update(self, n: int = 1, **postfix) -> None:
        self._impl.update(n, **postfix)

    def close(self) -> None:
        self._impl.close()

    def __enter__(self) -> bar:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
