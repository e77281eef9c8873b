"""CPU speed of the main job's small training steps and generator passes, by precision and thread layout.

    python benchmarks/cpu_steps.py [--steps 20] [--threads 2]

Rows (milliseconds per step after two warm-up steps, in one process with ``--threads`` threads):

* U-Net training steps of `SegmentationTrainer` (channels-last) with ``amp`` 'off' and 'auto' (bf16 autocast where
  the CPU has native bf16): notebook 04's (width 16, 2 classes, batch 32, 64 px), notebook 05's (3 classes) and its
  refiner's (6 input channels, 3 classes, batch 8);
* the default StyleGAN2's forward on 32 images and its `w:64` pair (G(z), G shifted) on 16 latents, no grad;
* notebook-06 fine-tunes (150 steps, batch 8, width-16 ResNet backbone, 20 random images, scored on 8): one after
  the other at ``--threads`` threads, and in two single-thread processes (`finetune_many`); milliseconds per
  fine-tune.
"""

import argparse
import multiprocessing
import tempfile
import time
from collections.abc import Callable

import numpy as np
import torch

from helpers.gans import load
from helpers.gans.shift_spaces import with_shift_space
from helpers.layermatch.fewshot import FinetuneJob, finetune_and_evaluate, finetune_many, finetune_settings
from helpers.layermatch.models import build_segmentation_model
from helpers.segmentation import SegmentationSettings, SegmentationTrainer, UNet


def ms_per_call(fn: Callable[[], object], steps: int) -> float:
    """Mean wall milliseconds of ``fn`` over ``steps`` calls after two warm-up calls."""
    fn(), fn()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return 1000 * (time.perf_counter() - start) / steps


def unet_step(channels: int, classes: int, batch: int, amp: str, steps: int) -> float:
    """Milliseconds per trainer step of a width-16 U-Net on a fixed random 64-px batch."""
    x, y = torch.randn(batch, channels, 64, 64), torch.randint(0, classes, (batch, 64, 64))
    with tempfile.TemporaryDirectory() as folder:
        settings = SegmentationSettings(steps=10**6, amp=amp, checkpoint_every=10**6)
        trainer = SegmentationTrainer(folder, UNet(n_channels=channels, n_classes=classes, width=16), settings)
        return ms_per_call(lambda: trainer.train_step(x, y), steps)


def finetunes(workers: int, threads: int) -> float:
    """Milliseconds per fine-tune when 4 * workers fine-tunes run in ``workers`` processes (0: 4 here)."""
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (20, 64, 64, 3), np.uint8), rng.integers(0, 2, (20, 64, 64), np.uint8)
    eval_images, eval_gt = images[:8], labels[:8] > 0
    n = 4 * max(workers, 1)
    with tempfile.TemporaryDirectory() as folder:
        jobs = [
            FinetuneJob(
                f"{folder}/{i}",
                build_segmentation_model(2, None, {"width": 16}, seed=i),
                images,
                labels,
                finetune_settings(150, 1e-3, i),
            )
            for i in range(n)
        ]
        start = time.perf_counter()
        if workers:
            finetune_many(jobs, eval_images, eval_gt, 8, workers=workers, progress=False)
        else:
            torch.set_num_threads(threads)
            for job in jobs:  # one after the other in this process
                finetune_and_evaluate(*job[:4], eval_images, eval_gt, job.settings, batch_size=8)
        return 1000 * (time.perf_counter() - start) / n


@torch.no_grad()
def generator_rows(steps: int) -> dict[str, float]:
    """The default StyleGAN2's forward on 32 images and its w:64 pair on 16 latents."""
    G = with_shift_space(load("default-stylegan2"), "w:64")
    z, shift = G.sample_z(32, 0), torch.randn(1, G.dim_z)
    return {
        "StyleGAN2 forward, 32 images": ms_per_call(lambda: G(z, noise_seed=1), steps),
        "StyleGAN2 w:64 pair, 16 latents": ms_per_call(lambda: G.pair(z[:16], shift), steps),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = {}
    for name, (channels, classes, batch) in {
        "notebook 04 U-Net, batch 32": (3, 2, 32),
        "notebook 05 U-Net, batch 32": (3, 3, 32),
        "notebook 05 refiner, batch 8": (6, 3, 8),
    }.items():
        for amp in ("off", "auto"):
            rows[f"{name}, amp {amp}"] = unet_step(channels, classes, batch, amp, args.steps)
    rows.update(generator_rows(args.steps))
    rows[f"fine-tune, one process of {args.threads} threads"] = finetunes(0, args.threads)
    torch.set_num_threads(args.threads)
    rows["fine-tune, two single-thread processes"] = finetunes(2, 1)
    width = max(map(len, rows))
    for name, ms in rows.items():
        print(f"{name:<{width}}  {ms:8.1f} ms")


if __name__ == "__main__":
    multiprocessing.freeze_support()
    main()
