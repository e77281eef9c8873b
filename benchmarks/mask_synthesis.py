"""Mask synthesis speed: the batched path (helpers.direction_masks.synthesis.synthesize) against the per-image
reference procedure.

    python benchmarks/mask_synthesis.py [--batch 32] [--batches 4] [--threads 2] [--device cpu]
        [--generator default-biggan] [--direction FILE] [--rule lighting] [--bigbigan-random]

Both paths get the same latents on the same generator and device, and both run every filter
(connected components, area, maxes). The batched path also stores the generator's weights channels-last on a
CPU, as `MaskSynthesizer` does. "images/s" counts candidate (image, mask) pairs, "masks/s" the
pairs that pass the filters. The "rules only" rows time the masks and filters alone on images
generated beforehand (vectorised `apply_rules` against the per-image `apply_rules_per_image`).
Without --direction a random unit direction (seed 0) is used. --bigbigan-random times the
BigBiGAN-size generator (128 px, dim_z 120) with random weights; it is meant for a GPU (--device cuda).
"""

import argparse
import copy
import time
from collections.abc import Callable
from typing import TypeVar

import torch

from helpers.direction_masks.direction_files import load_direction
from helpers.direction_masks.reference_path import apply_rules_per_image, synthesize_per_image
from helpers.direction_masks.synthesis import MaskRules, SynthesisResult, apply_rules, synthesize
from helpers.gans import load
from helpers.gans.base import Generator, prefer_channels_last
from helpers.gans.biggan import BigGAN

T = TypeVar("T")


def build_generator(args: argparse.Namespace) -> tuple[Generator, str]:
    """The generator to time (eval mode) and its name for the report."""
    if args.bigbigan_random:
        return BigGAN.bigbigan().to(args.device).eval(), "BigBiGAN-size BigGAN, random weights"
    return load(args.generator, args.device), args.generator


def build_direction(path: str | None, dim_z: int) -> torch.Tensor:
    """The direction from a file, or a random unit vector with a fixed seed."""
    if path:
        return load_direction(path, dim_z)
    h = torch.randn(dim_z, generator=torch.Generator().manual_seed(0))
    return h / h.norm()


def time_path(run: Callable[[T], SynthesisResult], inputs: list[T], device: str) -> tuple[float, int]:
    """Seconds for all batches (after one warm-up batch) and the number of kept samples."""
    run(inputs[0])
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    kept = sum(int(run(x).keep.sum()) for x in inputs)  # .sum() to int waits for the device
    return time.perf_counter() - start, kept


def report(label: str, n: int, seconds: float, kept: int) -> float:
    """Prints one table row and returns images/s."""
    print(f"| {label} | {n / seconds:.1f} | {kept / seconds:.1f} | {kept}/{n} | {seconds:.3f} |")
    return n / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32, help="latents per batch")
    parser.add_argument("--batches", type=int, default=4, help="timed batches per path")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--generator", default="default-biggan", help="a checkpoint name or path for helpers.gans.load")
    parser.add_argument("--direction", help="a direction file (like bg_direction.pth); default: random unit, seed 0")
    parser.add_argument("--rule", default="lighting", choices=["lighting", "mean_thr"])
    parser.add_argument("--r", type=float, default=5.0, help="shift magnitude")
    parser.add_argument(
        "--refine", default="none", choices=["none", "grabcut"], help="mask refinement (beyond the reference)"
    )
    parser.add_argument(
        "--min-consistency",
        type=float,
        default=0.0,
        help="consistency filter: minimum IoU between a mask and its GrabCut re-fit (beyond the reference)",
    )
    parser.add_argument(
        "--max-border",
        type=float,
        default=1.0,
        help="border filter: largest fraction of the image frame a mask may cover (beyond the reference)",
    )
    parser.add_argument("--bigbigan-random", action="store_true", help="BigBiGAN-size generator with random weights")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    G, name = build_generator(args)
    h = build_direction(args.direction, G.dim_z)
    rules = MaskRules(
        r=args.r, rule=args.rule, refine=args.refine, min_consistency=args.min_consistency, max_border=args.max_border
    )
    gen = torch.Generator().manual_seed(1)
    latents = [torch.randn(args.batch, G.dim_z, generator=gen).to(args.device) for _ in range(args.batches)]
    n = args.batch * args.batches
    print(
        f"{name} ({G.resolution} px, dim_z {G.dim_z}) on {args.device}, {args.threads} threads, "
        f"{args.batches} batches of {args.batch}, rule {args.rule}, torch {torch.__version__}\n"
    )
    print("| path | images/s | masks/s | kept | seconds |\n|---|---:|---:|---:|---:|")
    speeds = {}
    fast = prefer_channels_last(copy.deepcopy(G))  # what MaskSynthesizer does to its generator
    for path, fn, model in (("batched", synthesize, fast), ("per-image", synthesize_per_image, G)):
        seconds, kept = time_path(lambda z: fn(model, z, h, rules), latents, args.device)
        speeds[path] = report(path, n, seconds, kept)
    with torch.no_grad():
        pairs = [G.pair(z, args.r * h.to(z).view(1, -1)) for z in latents]
    for path, fn in (("rules only, batched", apply_rules), ("rules only, per-image", apply_rules_per_image)):
        seconds, kept = time_path(lambda pair: fn(*pair, rules), pairs, args.device)
        speeds[path] = report(path, n, seconds, kept)
    print(
        f"\nspeed-up of the batched path: {speeds['batched'] / speeds['per-image']:.2f}x end to end, "
        f"{speeds['rules only, batched'] / speeds['rules only, per-image']:.1f}x for the rules alone"
    )


if __name__ == "__main__":
    main()
