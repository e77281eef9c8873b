"""Notebook 05's pipeline at chosen settings, scored on the procedural **val** split, with the time of each stage.

Runs `ProjectionPipeline.run` on the first ``--k`` annotations of notebook 05's store, with the settings of the
notebook's parameters cell unless an option changes them, scores the U-Net as notebook 05's learning curve does
(eight-view mean, GrabCut re-fit, and without the re-fit) on the val images of the default data, and appends one JSON
line (settings, seconds per stage, val scores) to ``--log``. Stages are timed by wrapping the pipeline module's stage
functions (decoder fit, fold decoders + refiner, synthetic dataset, U-Net); a stage found complete in ``out_dir`` is
loaded, not redone, so compare times of runs into an empty folder. The test split is not touched.

    python -m experiments.projection_val OUT_DIR [--k 20] [--refiner-steps 750] [--seed 0] [--unet-steps 200]
        [--n-synthetic 1000] [--val-images 1000] [--log OUT_DIR/runs.jsonl]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from helpers.core.parameters import declared_parameters
from helpers.core.paths import resolve
from helpers.core.runtime import start_notebook
from helpers.data.splits import ProceduralSplits, load_split
from helpers.segmentation.grabcut import TrimapGrabCut
from helpers.semantic_projection import pipeline
from helpers.semantic_projection.annotations import AnnotationStore
from helpers.semantic_projection.fitting import FitConfig
from helpers.semantic_projection.refinement import RefinerConfig

NOTEBOOK = "notebooks/05_semantic_projection.ipynb"
STAGES = {
    "fit": "decoder",
    "fit_refiner": "fold decoders + refiner",
    "generate_dataset": "synthesis",
    "train_job": "unet",
}


def timed(seconds: dict[str, float], name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` adding its wall time to ``seconds[name]``."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start

    return wrapper


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point (see the module docstring)."""
    nb = declared_parameters(resolve(NOTEBOOK))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--k", type=int, default=20, help="the first k annotations")
    parser.add_argument("--n-synthetic", type=int, default=nb["N_SYNTHETIC"])
    parser.add_argument("--unet-steps", type=int, default=nb["SEG_STEPS"], help="the curve's points: CURVE_STEPS")
    parser.add_argument("--refiner-steps", type=int, default=nb["REFINER_STEPS"])
    parser.add_argument("--refiner-members", type=int, default=nb["REFINER_MEMBERS"])
    parser.add_argument("--seed", type=int, default=nb["SEED"])
    parser.add_argument("--val-images", type=int, default=1000, help="first images of the val split that are scored")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--log", help="JSON-lines file the result is appended to (default: OUT_DIR/runs.jsonl)")
    args = parser.parse_args(argv)

    out, device = start_notebook(args.out_dir, args.seed, args.device)
    store = AnnotationStore.open_or_create(
        resolve(nb["ANNOTATIONS"]), nb["GENERATOR"], "multiclass", nb["CLASSES"].split(",")
    )
    G = store.load_generator(str(device))
    fit_config = FitConfig(
        num_classes=len(store.classes),
        width=nb["DECODER_WIDTH"],
        epochs=nb["DECODER_EPOCHS"],
        seed=args.seed,
        class_weight_power=nb["CLASS_WEIGHT_POWER"],
    )
    refiner = RefinerConfig(nb["REFINER_FOLDS"], args.refiner_members, steps=args.refiner_steps, seed=args.seed)
    recipe = pipeline.UNetRecipe(
        nb["SEG_STEPS"], nb["LR_STEP"], nb["SEG_BATCH"], nb["UNET_WIDTH"], nb["UNET_AUGMENT"], seed=args.seed
    )
    projection = pipeline.ProjectionPipeline(
        G, out, fit_config, refiner, recipe, len(store.classes), nb["SHARD_SIZE"], device=device
    )
    seconds: dict[str, float] = {}
    originals = {name: getattr(pipeline, name) for name in STAGES}
    try:
        for name, label in STAGES.items():
            setattr(pipeline, name, timed(seconds, label, originals[name]))
        start = time.perf_counter()
        run = projection.run(store.training_samples()[: args.k], args.n_synthetic, args.unet_steps)
        seconds["total"] = time.perf_counter() - start
    finally:
        for name, fn in originals.items():
            setattr(pipeline, name, fn)
    images, labels = load_split(ProceduralSplits(), "val")  # the default data, whatever the seed
    n = args.val_images
    protocols = pipeline.ScoringProtocols(
        images[:n], labels[:n], store.classes, True, TrimapGrabCut(), "procedural_val"
    )
    start = time.perf_counter()
    point = pipeline.curve_point(protocols, run.unet.model, args.k)
    seconds["scoring"] = time.perf_counter() - start
    record = {"settings": vars(args), "seconds": {k: round(v, 1) for k, v in seconds.items()}, "val": point}
    print(json.dumps(record))
    log = Path(args.log) if args.log else out / "runs.jsonl"
    with log.open("a") as f:
        f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
