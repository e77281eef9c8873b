"""Speed and memory of the `paper` profile's two costs per step: the reference U-Net's training step (width 64,
128 px, batch 95) and the synthesis of one batch of filtered pairs from a BigBiGAN-size generator.

    python benchmarks/paper_unet.py [--device cuda] [--batch 95] [--steps 20] [--threads 2]

U-Net rows: each autocast mode of `SegmentationSettings.amp` ('off', and on CUDA 'bf16' and 'fp16'), with the
trainer's memory format (channels-last on CUDA) and, on CUDA, with contiguous tensors for comparison; steps/s
after two warm-up steps and the peak memory of the step (CUDA: allocated by torch; CPU: the process's peak RSS,
which includes everything loaded before). Synthesis row: `MaskSynthesizer` with the paper's rules (r = 5,
lighting, area < 0.5, maxes filter, components) on random BigBiGAN weights and a random unit direction; random
weights pass the filters at another rate than the released ones, so it reports both candidate images/s and
kept pairs/s. The last line projects a 12,001-step run with a fresh batch every step (``PREGENERATED = 0``).
"""

import argparse
import resource
import tempfile
import time
from collections.abc import Callable

import torch

from helpers.direction_masks.synthesis import MaskSynthesizer
from helpers.gans.biggan import BigGAN
from helpers.segmentation import SegmentationSettings, SegmentationTrainer, UNet

PAPER_STEPS = 12001


def synchronize(device: torch.device) -> None:
    """Waits for queued device work, so timings cover it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    """Starts a new peak-memory measurement (CUDA only; RSS peaks cannot be reset)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float:
    """Peak memory in GiB since the last reset: torch's CUDA allocations, or the process's peak RSS on a CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def timed(step: Callable[[], object], n: int, device: torch.device) -> float:
    """Seconds per call of ``step`` over ``n`` calls, after two warm-up calls."""
    for _ in range(2):
        step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(n):
        step()
    synchronize(device)
    return (time.perf_counter() - start) / n


def unet_step(device: torch.device, batch: int, steps: int, amp: str, channels_last: bool) -> tuple[float, float]:
    """Seconds per training step and peak GiB of the reference U-Net at 128 px."""
    torch.manual_seed(0)
    x = torch.randn(batch, 3, 128, 128, device=device)
    y = torch.randint(0, 2, (batch, 128, 128), device=device)
    with tempfile.TemporaryDirectory() as folder:
        trainer = SegmentationTrainer(folder, UNet(width=64), SegmentationSettings(amp=amp), device)
        if not channels_last:
            trainer.memory_format = torch.contiguous_format
            trainer.model.to(memory_format=torch.contiguous_format)
        reset_peak(device)
        seconds = timed(lambda: trainer.train_step(x, y), steps, device)
        return seconds, peak_gib(device)


def synthesis(device: torch.device, batch: int, batches: int) -> tuple[float, float, float]:
    """Seconds per batch of ``batch`` kept pairs, candidate images per kept pair, and peak GiB."""
    torch.manual_seed(0)
    G = BigGAN.bigbigan().to(device).eval()
    direction = torch.nn.functional.normalize(torch.randn(G.dim_z, generator=torch.Generator().manual_seed(1)), dim=0)
    synth = MaskSynthesizer(G, direction.to(device), 5.0, "lighting", batch_size=batch, rng=0)
    steps = iter(range(10**9))
    reset_peak(device)
    seconds = timed(lambda: synth.batch_at(next(steps), batch), batches, device)
    return seconds, synth.n_generated / max(synth.n_kept, 1), peak_gib(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=95, help="the reference batch")
    parser.add_argument("--steps", type=int, default=20, help="timed U-Net steps per row")
    parser.add_argument("--batches", type=int, default=5, help="timed synthesis batches")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} threads"
    print(f"{name}, torch {torch.__version__}, batch {args.batch}, 128 px\n")
    print("| part | setting | steps/s | seconds/step | peak GiB |\n|---|---|---:|---:|---:|")
    modes = ["off", "bf16", "fp16"] if device.type == "cuda" else ["off"]
    layouts = [True, False] if device.type == "cuda" else [False]
    unet_seconds = {}
    for amp in modes:
        for channels_last in layouts:
            seconds, peak = unet_step(device, args.batch, args.steps, amp, channels_last)
            setting = f"amp {amp}, {'channels-last' if channels_last else 'contiguous'}"
            unet_seconds[setting] = seconds
            print(f"| U-Net step (width 64) | {setting} | {1 / seconds:.2f} | {seconds:.3f} | {peak:.2f} |")
    seconds, per_kept, peak = synthesis(device, args.batch, args.batches)
    print(
        f"| mask synthesis (BigBiGAN size, random weights) | {per_kept:.2f} candidates per kept pair "
        f"| {1 / seconds:.2f} | {seconds:.3f} | {peak:.2f} |"
    )
    default = "amp bf16, channels-last" if device.type == "cuda" else "amp off, contiguous"
    hours = PAPER_STEPS * (unet_seconds[default] + seconds) / 3600
    print(f"\n{PAPER_STEPS} steps with a fresh batch each ({default}): {hours:.2f} h projected")


if __name__ == "__main__":
    main()
