"""Render speed of the procedural domain on one core: images per second per resolution.

python benchmarks/procedural_render.py [--sizes 32 64 128 256] [-n 1000]
"""

import argparse

from helpers.data.procedural import benchmark


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128, 256])
    parser.add_argument("-n", type=int, default=1000, help="images at 64x64 (scaled by area for other sizes)")
    args = parser.parse_args()
    for size in args.sizes:
        n = max(50, args.n * 64 * 64 // (size * size))
        print(f"{size:>4}x{size:<4} {benchmark(size, n):8.0f} images/s  ({n} images)")


if __name__ == "__main__":
    main()
