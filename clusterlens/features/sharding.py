"""Sharded feature extraction with ``torch.distributed``, launched by ``torchrun``.

``extract.processes`` > 1 (processes per node) or ``extract.nodes`` > 1 makes the `extract`
stage start ``python -m torch.distributed.run ... -m stages.extract`` instead of extracting
itself. Every rank reads the same index and the same feature store, extracts a contiguous share
of the images the store does not hold, and appends it to the store a shard every few batches as
it goes (shards have unique names and are written atomically: several writers never tear or
lose each other's rows, and a killed run keeps every rank's flushed shards). After a barrier, the
*writer* (local rank 0 on the node that DVC runs on) reads every
image's features back from the store in index order and writes the stage's outputs; the other
ranks write nothing. Because every forward pass holds exactly ``extract.batch_size`` images and
every rank uses the same number of intra-op threads (``extract.threads``), the features file is
byte-for-byte the one a single process writes.

Backends: NCCL when the ranks run on CUDA (each on ``cuda:LOCAL_RANK``), gloo on CPU.
Several nodes: the same command on every node (see the README, "Scaling up"), with a shared
file system holding the images and the store, and one rendezvous endpoint
(``extract.rdzv_endpoint``, host:port of any node reachable by all).
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass

import torch

from clusterlens.core.errors import ParamError

log = logging.getLogger("clusterlens.features.sharding")
WRITER_ENV = "CLUSTERLENS_WRITER_NODE"  # set by the launcher on the node DVC runs on
THREADS_ENV = "CLUSTERLENS_THREADS"     # the launcher's resolved extract.threads


@dataclass
class Context:
    """This process's place in a sharded run; ``writer`` writes the outputs."""

    rank: int
    world_size: int
    local_rank: int
    writer: bool

    def barrier(self) -> None:
        """Wait for every rank."""
        import torch.distributed as dist

        dist.barrier()

    def close(self) -> None:
        """Leave the process group."""
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def inside_torchrun() -> bool:
    """Whether this process is a rank started by torchrun."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def init(device_spec: str) -> tuple[Context, torch.device]:
    """Join the process group torchrun set up.

    NCCL with one GPU per local rank when CUDA is used (``device_spec`` not ``cpu`` and CUDA
    available), else gloo.

    Returns
    -------
    ctx : Context
    device : torch.device
        This rank's device.
    """
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = device_spec != "cpu" and torch.cuda.is_available()
    if use_cuda:
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    dist.init_process_group(backend="nccl" if use_cuda else "gloo",
                            **({"device_id": device} if use_cuda else {}))
    ctx = Context(rank=dist.get_rank(), world_size=dist.get_world_size(),
                  local_rank=local_rank,
                  writer=os.environ.get(WRITER_ENV) == "1" and local_rank == 0)
    log.info("rank %d of %d (local rank %d) on %s, backend %s%s", ctx.rank, ctx.world_size,
             local_rank, device, dist.get_backend(), ", writes the outputs" if ctx.writer else "")
    return ctx, device


def resolve_threads(spec) -> int:
    """``extract.threads``: intra-op threads per process. ``auto`` = what torch uses by
    default in a plain process on this machine (inside torchrun: the launcher's value, passed
    down, since torchrun sets OMP_NUM_THREADS=1). Features depend on it in their last bits, so
    it is part of the feature store's key and every rank of a sharded run uses the same."""
    if spec == "auto":
        return int(os.environ.get(THREADS_ENV) or torch.get_num_threads())
    if isinstance(spec, bool) or not isinstance(spec, int) or spec < 1:
        raise ParamError("extract.threads", f"must be auto or an integer >= 1, got {spec!r}")
    return spec


def torchrun_command(module: str, processes: int, nodes: int, endpoint: str,
                     argv: list[str]) -> list[str]:
    """The ``python -m torch.distributed.run`` command that runs ``python -m module argv``.

    Parameters
    ----------
    module : str
        The module every rank runs (the extract stage).
    processes : int
        Processes per node.
    nodes : int
        Nodes: 1 runs standalone, more use a c10d rendezvous at ``endpoint``.
    endpoint : str
        ``host:port`` of the rendezvous.
    argv : list of str
        Arguments for the module.

    Returns
    -------
    list of str
    """
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}"]
    if nodes == 1:
        cmd += ["--standalone"]
    else:
        cmd += [f"--nnodes={nodes}", "--rdzv_backend=c10d", f"--rdzv_endpoint={endpoint}",
                "--rdzv_id=clusterlens-extract"]
    return cmd + ["-m", module, *argv]


def launch(module: str, processes: int, nodes: int, endpoint: str, threads: int,
           argv: list[str]) -> None:
    """Run the sharded extraction (see :func:`torchrun_command`) and wait for it.

    This node's local rank 0 is the writer; every rank uses ``threads`` intra-op threads.

    Raises
    ------
    RuntimeError
        When torchrun fails (a failed rank fails the run).
    """
    cmd = torchrun_command(module, processes, nodes, endpoint, argv)
    log.info("launching %d process(es) x %d node(s): %s", processes, nodes, " ".join(cmd))
    env = {**os.environ, WRITER_ENV: "1", THREADS_ENV: str(threads),
           "OMP_NUM_THREADS": str(threads)}
    res = subprocess.run(cmd, env=env)
    if res.returncode != 0:
        raise RuntimeError(f"torchrun exited with {res.returncode}: see the ranks' logs above")
