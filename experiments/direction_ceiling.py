"""How good can a single latent direction be on a generator? Quality of the unsupervised pipeline of
notebook 04 when its direction is (a) fitted with labels, or (b) any candidate of notebook 03.

(a) uses the simulated annotator's labeller (a U-Net trained on the procedural train split; see
``helpers.semantic_projection.simulated_annotator``) on generated images as labels, and
``experiments.label_fit.fit_direction``.
For each direction, a U-Net (width 16, 600 steps, as notebook 04) is trained on its synthetic masks and
evaluated on the procedural test split. Labels never touch the test split.

    python -m experiments.direction_ceiling --labeller-run results/labeller \
        --candidates results/03_direction_finding/candidates.pt --names "discovered 49" --threads 2
    python -m experiments.direction_ceiling --labeller-run results/labeller --generator default-stylegan2 \
        --shift-space w:32
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from experiments.label_fit import fit_direction
from helpers.core.io import write_json
from helpers.data.splits import ProceduralSplits, load_split
from helpers.direction_masks.direction_files import save_direction
from helpers.direction_masks.synthesis import MaskSynthesizer
from helpers.gans import load, to_uint8
from helpers.gans.base import Generator
from helpers.gans.shift_spaces import with_shift_space
from helpers.segmentation import SegmentationSettings, SegmentationTrainer, UNet, class_probabilities, evaluate_arrays
from helpers.semantic_projection.simulated_annotator import train_labeller


def unsupervised_quality(
    G: Generator,
    direction: torch.Tensor,
    run_dir: Path,
    magnitude: float,
    steps: int,
    test: tuple[np.ndarray, np.ndarray],
) -> dict[str, float]:
    """Notebook 04's U-Net trained on the synthetic masks of ``direction``; scores on the test split."""
    synth = MaskSynthesizer(G, direction, magnitude, "lighting", batch_size=32, rng=0)
    torch.manual_seed(0)
    trainer = SegmentationTrainer(
        run_dir, UNet(width=16), SegmentationSettings(steps=steps, lr_step=2 * steps // 3, checkpoint_every=100, seed=0)
    )
    trainer.train(synth)
    scores = evaluate_arrays(trainer.model, *test)
    return {key: round(scores[key], 4) for key in ("iou", "accuracy", "f_max")} | {
        "kept_fraction": round(synth.n_kept / max(synth.n_generated, 1), 3)
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--generator", default="default-biggan")
    parser.add_argument("--shift-space", default="z", help="z, or for StyleGAN2 w or w:R (notebook 03's SHIFT_SPACE)")
    parser.add_argument(
        "--labeller-run", required=True, help="simulated annotator's labeller folder (trained if empty)"
    )
    parser.add_argument("--candidates", help="candidates.pt written by notebook 03")
    parser.add_argument("--names", nargs="*", default=[], help="candidate names to evaluate, e.g. 'discovered 49'")
    parser.add_argument("--out", default="results/direction_ceiling")
    parser.add_argument("--magnitude", type=float, default=5.0)
    parser.add_argument("--fit-latents", type=int, default=512)
    parser.add_argument("--fit-steps", type=int, default=300)
    parser.add_argument("--seg-steps", type=int, default=600)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.names and not args.candidates:
        parser.error("--names needs --candidates (notebook 03's candidates.pt)")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    G = with_shift_space(load(args.generator).eval(), args.shift_space)

    labeller, log = train_labeller(args.labeller_run)
    z = G.sample_z(args.fit_latents, seed=1)
    with torch.no_grad():
        masks = torch.from_numpy(class_probabilities(labeller, to_uint8(G(z))).argmax(1) > 0)
    directions = {"fitted to labels": fit_direction(G, z, masks, args.magnitude, steps=args.fit_steps)}
    save_direction(out / "fitted_direction.pth", directions["fitted to labels"])
    if args.names:
        stored = torch.load(args.candidates, weights_only=True)
        missing = [n for n in args.names if n not in stored["names"]]
        if missing:
            raise SystemExit(f"{args.candidates} has no candidate {missing}; it has {stored['names'][:10]} ...")
        directions |= {n: stored["directions"][stored["names"].index(n)] for n in args.names}

    splits = ProceduralSplits(64, 20000, 1000, 1000, 0)
    test_images, test_labels = load_split(splits, "test")
    results = {
        "generator": args.generator,
        "shift_space": args.shift_space,
        "labeller_val_binary_iou": log["val"]["binary_iou"],
        "directions": {},
    }
    for name, h in directions.items():
        start = time.monotonic()
        scores = unsupervised_quality(
            G, h, out / name.replace(" ", "_"), args.magnitude, args.seg_steps, (test_images, test_labels > 0)
        )
        results["directions"][name] = scores | {"seconds": round(time.monotonic() - start)}
        print(f"{name:>20}: {scores}", flush=True)
    write_json(out / "results.json", results)


if __name__ == "__main__":
    main()
