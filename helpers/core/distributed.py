"""Several processes, one job: torch.distributed under ``torchrun``, and how a notebook launches it.

Every helper that splits work across processes asks this module for its rank and world size; outside torchrun
(no process group) the world is one process and each helper does what it always did. Ranks talk through
torch.distributed: NCCL between GPUs, gloo between CPU processes (the tests' setting).

A notebook (one process) hands a heavy step to ``GPUS`` processes with `on_ranks`: the step, a picklable callable
with its arguments, is saved as a job file with ``torch.save``, and ``torchrun --nproc-per-node GPUS -m
helpers.core.distributed JOB --backend nccl|gloo`` runs it on every rank (one GPU each when the notebook's device is
CUDA, CPU processes otherwise); loading maps the job's tensors onto each rank's device. The steps write into
resumable folders, so the notebook's own call afterwards finds them complete and loads them (docs/distributed.md).
"""

from __future__ import annotations

import argparse
import codecs
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as functional_collectives
from torch import Tensor, nn

from helpers.core.io import atomic_path

T = TypeVar("T")


def active() -> bool:
    """Whether this process belongs to a process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 outside a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """The number of processes of the job (1 outside a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """Whether this process writes the job's shared files (checkpoints, logs, records): rank 0."""
    return rank() == 0


def barrier() -> None:
    """Waits until every rank gets here (nothing outside a process group)."""
    if active():
        dist.barrier()


@contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block before the others do, e.g. to claim a folder's record that the others then check."""
    if not is_main():
        barrier()
    try:
        yield
    finally:
        if is_main():
            barrier()


def my_part(items: Sequence[T]) -> list[T]:
    """This rank's share of ``items``: every world_size-th item from its rank on (all of them in one process)."""
    return list(items[rank() :: world_size()])


def all_mean(value: float) -> float:
    """The mean of a float over the ranks (the value itself in one process)."""
    if not active():
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device())
    dist.all_reduce(t)
    return float(t.item()) / world_size()


def past(stop_at: float) -> bool:
    """Whether `time.monotonic` has reached ``stop_at`` (a job's deadline), on any rank: the ranks of a
    data-parallel run stop at the same step. No collective for an infinite deadline."""
    late = time.monotonic() >= stop_at
    if not active() or stop_at == math.inf:
        return late
    t = torch.tensor([int(late)], device=device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def step_generator(*key: int) -> torch.Generator:
    """A CPU generator seeded by ``key`` plus this rank and the world size: the random stream of one step on one
    rank, repeatable on resume without storing per-rank state."""
    seed = np.random.SeedSequence([*key, rank(), world_size()]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(seed))


def from_main(obj: T) -> T:
    """Rank 0's ``obj`` on every rank (any picklable object; itself in one process)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def to_main(items: list[T]) -> list[T]:
    """Every rank's ``items``, concatenated in rank order, on rank 0 (an empty list elsewhere; itself in one
    process): work that many ranks did and one process stores."""
    if not active():
        return items
    gathered: list[list[T]] | None = [[] for _ in range(world_size())] if is_main() else None
    dist.gather_object(items, gathered, dst=0)
    return [item for part in gathered for item in part] if is_main() else []


def all_sum(value: int) -> int:
    """The sum of an integer over the ranks (the value itself in one process)."""
    if not active():
        return value
    t = torch.tensor([value], dtype=torch.int64, device=device())
    dist.all_reduce(t)
    return int(t.item())


def device() -> torch.device:
    """This rank's device: its GPU (LOCAL_RANK) in a NCCL group, else the CPU."""
    if dist.is_available() and dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def job_device(default: torch.device | str) -> torch.device:
    """Where a job runs: this rank's device under torchrun, else ``default`` (the notebook's own call)."""
    return device() if active() else torch.device(default)


def init_from_env(backend: str = "gloo") -> None:
    """Joins the process group torchrun describes in the environment (RANK, WORLD_SIZE, MASTER_ADDR, ...): NCCL with
    one GPU per local rank, or gloo between CPU processes."""
    if dist.is_initialized():
        return
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl", device_id=torch.device("cuda", torch.cuda.current_device()))
    else:
        dist.init_process_group("gloo")


def _sum(t: Tensor) -> Tensor:
    """The sum of ``t`` over the ranks, differentiable (its gradient is the sum of the ranks' gradients)."""
    return functional_collectives.all_reduce(t, "sum", dist.group.WORLD).wait()


class SyncBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the global batch over all ranks, on any device.

    torch.nn.SyncBatchNorm (used on GPUs) does not run on the CPU; this one all-reduces the per-channel sums
    through torch's differentiable functional collectives (a sum's gradient is summed over the ranks), so CPU
    processes (gloo) train exactly as one process on the whole batch. Outside a process group, or in eval mode, it
    is BatchNorm2d.
    """

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and active()):
            return super().forward(x)
        dims, dtype, x = [0, 2, 3], x.dtype, x.float()  # statistics in float32, also under autocast
        count = _sum(x.new_tensor([x.numel() / x.shape[1]]))
        mean = _sum(x.sum(dims)) / count
        centred = x - mean[None, :, None, None]
        var = _sum(centred.square().sum(dims)) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), m)
                unbiased = var.detach() * count / (count - 1)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), m)
        out = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            out = out * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return out.to(dtype)


def sync_batch_norm(model: nn.Module) -> nn.Module:
    """``model`` with every BatchNorm2d synchronised over the ranks (torch.nn.SyncBatchNorm on CUDA, else
    `SyncBatchNorm2d`); the state dict keeps its keys and values."""
    if any(p.is_cuda for p in model.parameters()):
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for parent in list(model.modules()):
        for key, bn in list(parent.named_children()):
            if type(bn) is nn.BatchNorm2d:
                synced = SyncBatchNorm2d(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
                synced.load_state_dict(bn.state_dict())
                for name, param in bn.named_parameters(recurse=False):  # frozen stays frozen
                    synced.get_parameter(name).requires_grad_(param.requires_grad)
                setattr(parent, key, synced.train(bn.training))
    return model


def backend_for(device: torch.device | str) -> str:
    """The process-group backend for ranks on ``device``'s type: NCCL for CUDA, else gloo (CPU processes)."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def check_nproc(nproc: int, device: torch.device | str = "cpu") -> None:
    """A ValueError unless ``nproc`` is a process count this machine can run on ``device``'s type: at least 1, and
    on CUDA at most one per GPU (CPU processes are not limited)."""
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ValueError(f"the number of processes (GPUS) must be an integer of at least 1; got {nproc!r}")
    if backend_for(device) == "nccl" and nproc > torch.cuda.device_count():
        raise ValueError(f"{nproc} processes asked for, but this machine has {torch.cuda.device_count()} GPU(s)")


def write_job(
    job: Callable[[], Any], folder: str | os.PathLike, nproc: int, device: torch.device | str = "cpu"
) -> list[str]:
    """Saves ``job`` as ``folder/job.pt`` and returns the command that runs it on ``nproc`` local ranks of
    ``device``'s type (one GPU each for CUDA, else CPU processes). The ranks' output goes to the launching process,
    so torchrun gets no log folder (without one it would leave an empty ``torchelastic_*`` tree in the temp folder)."""
    check_nproc(nproc, device)
    path = Path(folder).resolve() / "job.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(job, tmp)
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
        f"--log-dir={os.devnull}", "-m", "helpers.core.distributed", str(path), "--backend", backend_for(device),
    ]  # fmt: skip


def launch(job: Callable[[], Any], nproc: int, folder: str | os.PathLike, device: torch.device | str = "cpu") -> None:
    """Runs ``job()`` on ``nproc`` ranks of this machine through torchrun and waits for it: one GPU per rank when
    ``device`` is a CUDA device, else CPU processes (whatever hardware the machine has).

    ``job`` (e.g. a functools.partial of a module-level function) is saved as ``folder/job.pt``; each rank loads
    it with its tensors on the rank's device and calls it. torchrun gives each rank one CPU thread unless
    OMP_NUM_THREADS says otherwise. The ranks' output is printed here; a failing rank fails the launch with the
    end of that output in the error.
    """
    command = write_job(job, folder, nproc, device)
    # the ranks' output goes through this process's stdout, so that a notebook cell shows it
    process = subprocess.Popen(
        command, cwd=Path(__file__).resolve().parents[2], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    decoder, tail = codecs.getincrementaldecoder("utf-8")(errors="replace"), ""
    try:
        while chunk := os.read(process.stdout.fileno(), 65536):
            text = decoder.decode(chunk)
            sys.stdout.write(text)
            sys.stdout.flush()
            tail = (tail + text)[-4000:]
    except BaseException:  # an interrupted notebook stops the job too (the ranks keep what they checkpointed)
        process.terminate()
        process.wait()
        raise
    if process.wait():
        raise RuntimeError(
            f"the {nproc}-process job {command[-1]} failed (exit status {process.returncode}); its output ended:\n"
            + tail
        )


def on_ranks(job: Callable[[], T], nproc: int, folder: str | os.PathLike, device: torch.device | str = "cpu") -> T:
    """``job()`` in this process, after running it on ``nproc`` torchrun ranks first when ``nproc`` > 1.

    For resumable steps (shards, training runs): the ranks do the work into the step's folders, and this process's
    call then finds them complete and loads them, so a notebook gets the same objects either way. ``folder`` holds
    the job file.
    """
    check_nproc(nproc, device)
    if nproc > 1:
        launch(job, nproc, folder, device)
    return job()


def run_job(path: str | os.PathLike, backend: str = "gloo") -> Any:
    """One rank's part of a launched job: joins the group, loads the job onto this rank's device, runs it."""
    init_from_env(backend)
    try:
        job = torch.load(path, map_location=device(), weights_only=False)  # written by `launch` on this machine
        result = job()
        dist.barrier()  # no rank tears its connections down while another still works (gloo aborts that rank)
        return result
    finally:
        dist.destroy_process_group()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="torchrun --nproc-per-node N -m helpers.core.distributed",
        description="Runs a job file written by helpers.core.distributed.launch on every rank.",
    )
    parser.add_argument("job", type=Path, help="the job.pt file")
    parser.add_argument("--backend", choices=["nccl", "gloo"], default="nccl" if torch.cuda.is_available() else "gloo")
    args = parser.parse_args(argv)
    run_job(args.job, args.backend)


if __name__ == "__main__":
    main()
