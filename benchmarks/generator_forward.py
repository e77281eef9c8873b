"""CPU (or GPU) forward time of the shipped default generators at batch 16, and of the encoder.

    python benchmarks/generator_forward.py [--device cpu] [--threads 2] [--repeats 20]

Prints the median wall time per forward pass (eval mode, no grad) after warm-up runs.
"""

import argparse
import statistics
import time

import torch

from helpers.gans import load


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


if __name__ == "__main__":
    main()
