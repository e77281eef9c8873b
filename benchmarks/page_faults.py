"""Page faults and step times of the main job's generator-heavy steps, with and without the runner's malloc tunables.

    python benchmarks/page_faults.py [--rounds 3] [--steps 10]

Each row runs in a fresh process (glibc reads ``GLIBC_TUNABLES`` at start-up), first with the environment as it is
and then with `helpers.runner.MALLOC_TUNABLES`, alternating ``--rounds`` times, because this machine's speed drifts
between minutes. Rows, two threads, after two warm-up steps:

* notebook 03's discovery step (default StyleGAN2, ``w:64``, batch 32);
* notebook 06's LayerMatch and autoencoder pre-training steps side by side (batch 16);
* notebook 04's U-Net step (width 16, batch 32, 64 px), whose tensors are small enough to stay in the heap anyway.
"""

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import torch

from helpers.runner import MALLOC_TUNABLES


def discovery(folder: str) -> Callable[[int], object]:
    from helpers.direction_masks.discovery import DirectionDiscovery, DiscoveryConfig
    from helpers.gans import load
    from helpers.gans.shift_spaces import with_shift_space

    G = with_shift_space(load("default-stylegan2").eval(), "w:64")
    run = DirectionDiscovery(folder, G, DiscoveryConfig(batch_size=32, lr=1e-3))
    return lambda steps: [run.train_step() for _ in range(steps)]


def pretraining(folder: str) -> Callable[[int], object]:
    from helpers.layermatch.pretraining import (
        AutoencoderConfig,
        AutoencoderTrainer,
        LayerMatchConfig,
        LayerMatchTrainer,
        train_together,
    )

    shared = dict(generator="default-stylegan2", backbone=dict(width=16), batch_size=16, seed=0)
    trainers = [
        LayerMatchTrainer(f"{folder}/layermatch", LayerMatchConfig(**shared)),
        AutoencoderTrainer(f"{folder}/autoencoder", AutoencoderConfig(**shared)),
    ]
    return lambda steps: train_together(trainers, trainers[0].step + steps, progress=False)


def unet(folder: str) -> Callable[[int], object]:
    from helpers.segmentation import SegmentationSettings, SegmentationTrainer, UNet

    images, masks = torch.rand(32, 3, 64, 64) * 2 - 1, (torch.rand(32, 64, 64) > 0.5).long()
    trainer = SegmentationTrainer(folder, UNet(width=16), SegmentationSettings(steps=10**6), "cpu")
    return lambda steps: [trainer.train_step(images, masks) for _ in range(steps)]


ROWS = {
    "notebook 03 discovery step": discovery,
    "notebook 06 pre-training step": pretraining,
    "notebook 04 U-Net step": unet,
}


def child(row: str, steps: int) -> None:
    """Prints wall milliseconds, page faults and system (kernel) CPU milliseconds per step of one row."""
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as folder:
        run = ROWS[row](folder)  # a function that runs n steps
        run(2)
        before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        run(steps)
        seconds, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
    faults, system = after.ru_minflt - before.ru_minflt, after.ru_stime - before.ru_stime
    print(f"{1000 * seconds / steps:.0f} {faults / steps:.0f} {1000 * system / steps:.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.steps)
    plain = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    envs = {"default malloc": plain, "MALLOC_TUNABLES": {**plain, "GLIBC_TUNABLES": MALLOC_TUNABLES}}
    for row in ROWS:
        results: dict[str, list[str]] = {label: [] for label in envs}
        for _ in range(args.rounds):
            for label, env in envs.items():
                command = [sys.executable, __file__, "--child", row, "--steps", str(args.steps)]
                out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout.split()
                results[label].append(f"{out[0]} ms ({out[2]} ms system), {out[1]} faults")
        for label, runs in results.items():
            print(f"{row:32} {label:16} " + " | ".join(runs))


if __name__ == "__main__":
    main()
