"""Resumable training of any segmentation model (images [B, 3, H, W] -> logits [B, K, H, W]) with cross-entropy.

The recipe defaults are the reference U-Net's: Adam at lr 1e-3, StepLR stepped every iteration (x0.2 after
8000 steps), 12001 updates (the reference loops over steps 0 ... 12000 inclusive). A run lives in one
folder: ``checkpoint.pt`` ({model, opt, scheduler, scaler, step, settings, model_shapes, rng}, written
atomically every ``checkpoint_every`` steps and when training stops, interruptions included) and
``log.jsonl`` (mean loss and lr every ``log_every`` steps, validation results every ``validate_every``).
A new `SegmentationTrainer` on the same folder resumes where the last one stopped.

Under torchrun the trainer is data-parallel (DistributedDataParallel, batch norm synchronised over the ranks): the
source still gives the global batch of each step, each rank trains on its contiguous slice, and the loss is
normalised by the global batch's labelled pixels, so N processes take the same steps as one process would
(docs/distributed.md). Rank 0 writes the checkpoint and the log; every rank resumes from the same checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from helpers.core import distributed
from helpers.core.io import save_torch
from helpers.core.runs import RunFolder, deadline
from helpers.core.runtime import AMP_MODES, amp_dtype, autocast
from helpers.segmentation.sources import Batch, BatchSource, SourceRecord, batch_function, source_record

RESUMABLE_CHANGES = {"steps", "checkpoint_every", "log_every", "validate_every", "amp"}  # may differ on resume
Validation = Callable[[nn.Module], dict[str, float]]


@dataclass
class SegmentationSettings:
    """Everything besides the model and the data that determines a training run (stored in its checkpoint)."""

    steps: int = 12001
    lr: float = 1e-3
    lr_step: int = 8000
    lr_gamma: float = 0.2
    checkpoint_every: int = 1000
    log_every: int = 10
    validate_every: int = 1000
    seed: int = 2
    amp: str = "auto"  # 'auto': bf16 autocast where the hardware has bf16 (else fp16 on CUDA); 'off', 'bf16', 'fp16'
    ignore_index: int | None = None  # label excluded from the loss, e.g. 255 for unlabelled pixels

    def __post_init__(self) -> None:
        if self.amp not in AMP_MODES:
            raise ValueError(f"amp must be one of {AMP_MODES}; got {self.amp!r}")


def model_shapes(model: nn.Module) -> dict[str, list[int]]:
    """State-dict entry -> shape, recorded in checkpoints to refuse resuming into a different model."""
    return {name: list(value.shape) for name, value in model.state_dict().items()}


def mean_loss_on(batches: Sequence[Batch], ignore_index: int | None = None) -> Validation:
    """A validation callback: mean cross-entropy on fixed (x, y, ...) batches (the reference's synthetic "test" set)."""

    def validate(model: nn.Module) -> dict[str, float]:
        device = next(model.parameters()).device
        losses = [_loss(model(b[0].to(device)), b[1].to(device).long(), ignore_index).item() for b in batches]
        return {"loss": sum(losses) / len(losses)}

    return validate


def _loss(logits: Tensor, y: Tensor, ignore_index: int | None) -> Tensor:
    """Cross-entropy in float32 (also under autocast), skipping ``ignore_index`` labels."""
    return F.cross_entropy(logits.float(), y, ignore_index=-100 if ignore_index is None else ignore_index)


def _check_labels(y: Tensor, n_classes: int, ignore: int | None) -> None:
    """Refuses labels the model has no class for (torch would fail with a bare index error, or on a GPU assert)."""
    outside = (y < 0) | (y >= n_classes)
    if ignore is not None:
        outside &= y != ignore
    if outside.any():
        found = torch.unique(y[outside]).tolist()[:5]
        raise ValueError(
            f"a training batch holds labels {found}, outside the model's {n_classes} classes 0 … {n_classes - 1}"
            + (f" and the ignore index {ignore}" if ignore is not None else "")
            + ": masks must hold class indices (e.g. 0/1 for object masks, not 0/255)"
        )


class SegmentationTrainer:
    """One resumable training run of ``model`` in ``run_dir``.

    A fresh run seeds torch's global RNG with ``settings.seed`` (for sources that draw from it); a resumed
    run restores the RNG state saved in the checkpoint.
    """

    def __init__(
        self,
        run_dir: str | Path,
        model: nn.Module,
        settings: SegmentationSettings | None = None,
        device: torch.device | str = "cpu",
    ):
        self.run_dir, self.device = Path(run_dir), torch.device(device)
        self.settings = settings or SegmentationSettings()
        self.model = model.to(self.device)
        # channels-last: cuDNN's fastest convolutions under autocast; oneDNN's small CPU convolutions about 1.5x faster
        self.memory_format = torch.channels_last
        self.model.to(memory_format=self.memory_format)
        self.net: nn.Module = self.model  # what the step runs: the model, or its DistributedDataParallel wrapper
        if distributed.active():
            self.model = distributed.sync_batch_norm(self.model)
            on_gpu = self.device.type == "cuda"
            self.net = DistributedDataParallel(self.model, device_ids=[self.device] if on_gpu else None)
        self.amp_dtype = amp_dtype(self.settings.amp, self.device)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=self.settings.lr)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.opt, self.settings.lr_step, self.settings.lr_gamma)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.step = 0
        self.source: SourceRecord | None = None  # what the batches of this run are (`source_record`)
        self.run = RunFolder(self.run_dir, RESUMABLE_CHANGES)
        if self.run.has_checkpoint():
            self._resume()
        else:
            torch.manual_seed(self.settings.seed)

    def _state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "opt": self.opt.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "settings": asdict(self.settings),
            "model_class": type(self.model).__qualname__,
            "model_shapes": model_shapes(self.model),
            "rng": torch.get_rng_state(),
            "source": self.source,
        }

    def save_checkpoint(self) -> Path:
        """Writes everything needed to resume, atomically; returns the path."""
        return self.run.save(self._state())

    def _resume(self) -> None:
        state = self.run.resume(
            asdict(self.settings),
            key="settings",
            clash="was written with different settings",
            remedy="or the same settings",
        )
        shapes = model_shapes(self.model)
        if state["model_class"] != type(self.model).__qualname__ or state["model_shapes"] != shapes:
            differing = sorted(
                k for k in state["model_shapes"].keys() | shapes.keys() if state["model_shapes"].get(k) != shapes.get(k)
            )
            raise ValueError(
                f"{self.run.checkpoint_path} holds a different model "
                f"({state['model_class']}, {len(state['model_shapes'])} entries) than the one given "
                f"({type(self.model).__qualname__}, {len(shapes)} entries); "
                f"use a new run folder. Differing entries: {differing[:5]}{' ...' if len(differing) > 5 else ''}"
            )
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"])
        self.step = state["step"]
        self.source = state.get("source")

    def train_step(self, x: Tensor, y: Tensor, whole_batch: bool = True) -> float:
        """One Adam update on batch (x, y) and one scheduler step; returns the loss. Under torchrun (x, y) is the
        global batch, of which this rank takes its slice, or with ``whole_batch=False`` this rank's own part."""
        if x.ndim != 4 or y.shape != (x.shape[0], *x.shape[2:]):
            raise ValueError(
                f"a batch must be x [B, C, H, W] and y [B, H, W]; got {tuple(x.shape)} and {tuple(y.shape)}"
            )
        ranks, ignore = distributed.world_size(), self.settings.ignore_index
        if ranks > 1 and whole_batch:
            if x.shape[0] < ranks:
                raise ValueError(f"a global batch of {x.shape[0]} cannot be split over {ranks} processes")
            labelled = y.numel() if ignore is None else int((y != ignore).sum())
            x, y = x.tensor_split(ranks)[distributed.rank()], y.tensor_split(ranks)[distributed.rank()]
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True).long()
        x = x.contiguous(memory_format=self.memory_format)
        if ranks > 1 and not whole_batch:
            labelled = distributed.all_sum(y.numel() if ignore is None else int((y != ignore).sum()))
        self.net.train()
        with autocast(self.amp_dtype, self.device):
            logits = self.net(x)
        _check_labels(y, logits.shape[1], ignore)
        if ranks > 1:  # DDP averages the ranks' gradients: ranks x (slice sum / global count) gives one process's
            ignored = -100 if ignore is None else ignore
            loss = F.cross_entropy(logits.float(), y, ignore_index=ignored, reduction="sum") * ranks / max(labelled, 1)
        else:
            loss = _loss(logits, y, ignore)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        self.scheduler.step()
        self.step += 1
        return loss.item()

    def validate(self, validation: Validation) -> dict[str, float]:
        """Runs ``validation`` on the model in eval mode, in full precision, without gradients."""
        self.model.eval()
        try:
            with torch.no_grad():
                return {k: float(v) for k, v in validation(self.model).items()}
        finally:
            self.model.train()

    def train(
        self,
        source: BatchSource,
        steps: int | None = None,
        max_minutes: float | None = None,
        progress: bool = True,
        validation: Validation | None = None,
    ) -> int:
        """Trains until ``steps`` (default: settings.steps) or the time limit; returns the step reached.

        ``source`` gives batches (see `batch_function`) whose first two items are (x, y); further items,
        such as the latents of a synthesized batch, are ignored. ``validation(model)`` runs every
        ``validate_every`` steps and at the last step, and its results are logged with a ``val_`` prefix.
        Under torchrun every rank calls it with the same source and the logged loss is the global batch's; a
        source with a ``part(step, rank, world_size)`` method (the on-the-fly mask synthesizer) gives each rank
        its own part instead of the global batch.
        """
        settings = self.settings
        steps = settings.steps if steps is None else steps
        self._check_source(source_record(source))
        parts = distributed.active() and hasattr(source, "part")
        if parts:
            rank, ranks = distributed.rank(), distributed.world_size()
            next_batch = lambda step: source.part(step, rank, ranks)  # noqa: E731
        else:
            next_batch = batch_function(source)
        stop_at = deadline(max_minutes)
        bar = tqdm(
            total=steps,
            initial=self.step,
            desc=f"training {type(self.model).__name__}",
            disable=not (progress and distributed.is_main()),
        )
        losses: list[float] = []
        saved_at = self.step
        try:
            with self.run.log() as log:
                while self.step < steps and not distributed.past(stop_at):
                    lr = self.scheduler.get_last_lr()[0]  # the rate this update uses
                    batch = next_batch(self.step)
                    losses.append(self.train_step(batch[0], batch[1], whole_batch=not parts))
                    bar.update(1)
                    bar.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
                    if self.step % settings.log_every == 0:
                        log({"step": self.step, "loss": distributed.all_mean(sum(losses) / len(losses)), "lr": lr})
                        losses.clear()
                    if validation is not None and (self.step % settings.validate_every == 0 or self.step == steps):
                        results = self.validate(validation)
                        log({"step": self.step, **{f"val_{k}": v for k, v in results.items()}})
                        bar.write(f"step {self.step}: " + ", ".join(f"{k} {v:.4f}" for k, v in results.items()))
                    if self.step % settings.checkpoint_every == 0:
                        self.save_checkpoint()
                        saved_at = self.step
        finally:  # done, out of time or interrupted: keep the progress
            bar.close()
            if self.step != saved_at or not self.run.has_checkpoint():
                self.save_checkpoint()
        distributed.barrier()  # the checkpoint is there for every rank
        return self.step

    def _check_source(self, record: SourceRecord | None) -> None:
        """Records the source of a new run; refuses to go on (or to stand for a finished run) with other data."""
        if record is None:
            return
        record = json.loads(json.dumps(record, default=str))  # as stored and read back
        if self.source is None or self.step == 0:
            self.source = record
        elif record != self.source:
            differing = sorted(k for k in record.keys() | self.source.keys() if record.get(k) != self.source.get(k))
            raise ValueError(
                f"{self.run.checkpoint_path} was trained on other data or batches (differing: {differing}); use a "
                f"new run folder or the same data.\n  checkpoint: {self.source}\n  requested:  {record}"
            )

    def export(self, path: str | Path) -> Path:
        """Writes the model's state dict (CPU tensors) atomically, like the reference ``segmentation.pth``."""
        state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        save_torch(state, path)
        return Path(path)


def train_job(
    run_dir: str | Path,
    model: nn.Module,
    settings: SegmentationSettings,
    source: BatchSource,
    device: torch.device | str = "cpu",
    **train: Any,
) -> SegmentationTrainer:
    """``model`` trained in ``run_dir``, as a job `helpers.core.distributed.on_ranks` can hand to several processes
    (each uses its own device there, ``device`` in one process); ``train`` goes to `SegmentationTrainer.train`."""
    trainer = SegmentationTrainer(run_dir, model, settings, distributed.job_device(device))
    trainer.train(source, **train)
    return trainer
