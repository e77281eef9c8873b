"""CPU (or GPU) forward time of the shipped default generators at batch 16, and of the encoder.

    python benchmarks/generator_forward.py [--device cpu] [--threads 2] [--repeats 20] [--chunks 8 16 32 64 128 1024]

Prints the median wall time per forward pass (eval mode, no grad) after warm-up runs. ``--chunks`` also times
mask synthesis's generator work, ``G.pair`` (G(z) and G(z + r h) in one forward) on 1,024 latents split into
chunks of each size, weights channels-last as in `helpers.direction_masks.synthesis.MaskSynthesizer` (StyleGAN2 in
``w:64``), and
prints latents per second: the measurement behind ``helpers.gans.base.CPU_LATENT_CHUNK``.
"""

import argparse
import statistics
import time

import torch

from helpers.gans import load
from helpers.gans.base import prefer_channels_last
from helpers.gans.shift_spaces import with_shift_space


def median_seconds(fn, repeats: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--chunks", type=int, nargs="*", default=[], help="chunk sizes for the G.pair throughput table")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"device {args.device}, {args.threads} threads, batch {args.batch}, torch {torch.__version__}")
    for name in ("default-biggan", "default-stylegan2"):
        model = load(name, args.device)
        z = model.sample_z(args.batch, 0)
        ms = 1e3 * median_seconds(lambda: model(z), args.repeats)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        print(f"{name:<20} {params:5.2f} M params  {ms:7.1f} ms / forward  ({ms / args.batch:.2f} ms / image)")
    encoder = load("default-biggan-encoder", args.device)
    x = torch.rand(args.batch, 3, encoder.resolution, encoder.resolution, device=args.device) * 2 - 1
    ms = 1e3 * median_seconds(lambda: encoder(x), args.repeats)
    print(f"{'default-biggan-encoder':<20} {ms:7.1f} ms / forward")
    if args.chunks:
        print("\nG.pair on 1,024 latents, latents/s by chunk size:", args.chunks)
        for name, space in (("default-biggan", "z"), ("default-stylegan2", "w:64")):
            G = prefer_channels_last(with_shift_space(load(name, args.device).eval(), space))
            z = torch.randn(1024, G.dim_z, generator=torch.Generator().manual_seed(0)).to(args.device)
            shift = 5.0 * torch.nn.functional.normalize(torch.randn(1, G.dim_z), dim=1).to(args.device)
            rates = []
            for chunk in args.chunks:
                G.pair(z[:chunk], shift)  # warm-up
                start = time.perf_counter()
                for part in z.split(chunk):
                    G.pair(part, shift)
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                rates.append(len(z) / (time.perf_counter() - start))
            print(f"{name} ({space}): " + "  ".join(f"{c}: {r:.0f}" for c, r in zip(args.chunks, rates)))


if __name__ == "__main__":
    main()
