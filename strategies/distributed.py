"""Data-parallel runs under torchrun: the process group, and the few collective steps the strategies take.

`torchrun --nproc_per_node=N run.py ...` starts N copies of the same run (ranks). They seed alike, so they
build the same model and draw the same length-bucketed batches in the same order; each rank trains on its
share of every batch and DistributedDataParallel averages the gradients, so a step is the same step as in
one process with the same (global) batch_size. Evaluation and feature extraction are split the same way
and gathered once. Plain `python run.py` creates no process group, and every helper here then does exactly
what the single-process code did (world size 1)."""

from __future__ import annotations

import atexit
import contextlib
import datetime
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import NoReturn

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

# Ranks wait while rank 0 alone works: scikit-learn fits, MLflow logging before training starts.
TIMEOUT = datetime.timedelta(hours=2)


def launched() -> bool:
    """Started by torchrun (or any launcher that sets the env:// rendezvous variables)."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def setup(device: str = "auto") -> None:
    """Join the process group torchrun describes, once per process: NCCL with GPU LOCAL_RANK when the run
    uses CUDA, gloo on CPU. Without torchrun, nothing happens."""
    if not launched() or dist.is_initialized():
        return
    use_cuda = str(device) != "cpu" and torch.cuda.is_available()
    if use_cuda and str(device).startswith("cuda:") and int(os.environ["WORLD_SIZE"]) > 1:
        raise ValueError(f"device={device} under torchrun: use device=auto or cuda (each rank takes GPU LOCAL_RANK)")
    if use_cuda:  # torch.device("cuda") now means this rank's own GPU
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group("nccl" if use_cuda else "gloo", timeout=TIMEOUT)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def exit_without_finalizing(main: Callable[[], object]) -> NoReturn:
    """main(), then the process ends as Python would (threads joined, atexit handlers, flushed streams, exit
    status) but skips the interpreter's final teardown. A torchrun worker needs this: gloo's worker threads
    drop each finished collective's tensors a moment after wait() returns, which takes the GIL, and a drop
    that meets a finalizing interpreter aborts the process (SIGABRT, "terminate called without an active
    exception"; 4 of 10 2-rank launches on a 2-CPU machine, after all the work was done). destroy_process_group() cannot
    prevent it: once torch.distributed.fsdp is imported (transformers' from_pretrained does), the group and
    its threads survive it."""
    interrupted = False
    try:
        main()
        code = 0
    except SystemExit as e:  # sys.exit(n), sys.exit("message"), or Hydra's exit after an error
        if e.code is None or isinstance(e.code, int):
            code = e.code or 0
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except BaseException:  # noqa: BLE001 - printed and reported as Python does for an uncaught exception
        sys.excepthook(*sys.exc_info())
        code, interrupted = 1, isinstance(sys.exc_info()[1], KeyboardInterrupt)
    threading._shutdown()  # what Python's exit does first: wait for non-daemon threads
    atexit._run_exitfuncs()  # MLflow's end of run, logging.shutdown, tqdm, multiprocessing
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    if interrupted:  # as Python ends after Ctrl-C: killed by SIGINT, which torchrun and shells report as such
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(code & 0xFF)


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def backend() -> str:
    return str(dist.get_backend()) if dist.is_initialized() else "none"


# ----------------------------------------------------------------------------- rank 0 alone
def from_main(fn: Callable[[], object]):
    """fn() on rank 0 alone (scikit-learn learners, reading a checkpoint); every rank gets its result."""
    if world_size() == 1:
        return fn()
    box = [fn() if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def sync_from_main(module: torch.nn.Module) -> None:
    """Rank 0's parameters and buffers on every rank: work that every rank repeats (SetFit's contrastive
    fine-tuning) may drift apart on a GPU, and sharded extraction must use one encoder."""
    if world_size() == 1:
        return
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            dist.broadcast(t.data, src=0)


def gather(obj) -> list:
    """Every rank's obj, in rank order (on every rank)."""
    if world_size() == 1:
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def all_sum(t: torch.Tensor) -> torch.Tensor:
    if world_size() == 1:
        return t
    t = t.clone()
    dist.all_reduce(t)
    return t


# ----------------------------------------------------------------------------- sharding
def shard(sizes: Sequence[int]) -> np.ndarray:
    """This rank's items: sorted by size and dealt round-robin, so every rank gets long and short ones alike
    (and as much padding and work as the others)."""
    order = np.argsort(-np.asarray(sizes), kind="stable")
    return order[rank() :: world_size()]


def map_shards(fn: Callable[[list], np.ndarray], items: Sequence, sizes: Sequence[int]) -> np.ndarray:
    """fn(items) -> one row per item, in order; computed by each rank on its shard and gathered once, so
    every rank gets all rows in item order. One process: fn(items), unchanged."""
    if world_size() == 1 or not len(items):
        return fn(items)
    mine = shard(sizes)
    rows = fn([items[i] for i in mine]) if len(mine) else None
    parts = gather((mine, rows))
    first = next(r for _, r in parts if r is not None)
    out = np.empty((len(items), *first.shape[1:]), dtype=first.dtype)
    for idx, r in parts:
        if r is not None:
            out[idx] = r
    return out


def batch_share(idx: np.ndarray) -> tuple[np.ndarray, float]:
    """This rank's part of a global batch, and the weight of its summed loss: batch mean x world size, as
    DDP averages the ranks' gradients. A rank left without examples (a last batch smaller than the world)
    still runs one example at weight 0, since every rank must take part in the gradient all-reduce."""
    n = world_size()
    if n == 1:
        return idx, 1.0
    part = idx[rank() :: n]
    return (part, float(n)) if len(part) else (idx[:1], 0.0)


# ----------------------------------------------------------------------------- the model
def wrap(module: nn.Module, every_parameter_used: bool = True) -> nn.Module:
    """DistributedDataParallel around the module when there are several ranks, else the module itself.
    Buffers are constant here (position ids, the head's standardiser), so they are not re-broadcast at
    every forward — which also lets ranks run different numbers of micro-batches."""
    if world_size() == 1:
        return module
    import inspect

    from torch.nn.parallel import DistributedDataParallel as DDP

    # torch 2.13 renamed the switch (the old name warns); older releases know only broadcast_buffers
    new_name = "forward_sync_buffers" in inspect.signature(DDP).parameters
    no_sync = {"forward_sync_buffers" if new_name else "broadcast_buffers": False}
    return DDP(module, find_unused_parameters=not every_parameter_used, **no_sync)


def sync_gradients(model: nn.Module, last_micro_batch: bool):
    """Gradient accumulation under DDP: all-reduce only after the last micro-batch of a step."""
    if last_micro_batch or not hasattr(model, "no_sync"):
        return contextlib.nullcontext()
    return model.no_sync()
