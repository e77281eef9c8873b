"""Few-label segmentation experiments: k labelled images per seed, one resumable fine-tune per run, mean ± std.

An experiment fine-tunes several initialisations ("arms", e.g. random / LayerMatch / autoencoder backbones
from `helpers.layermatch.models.comparison_models`) on k labelled images for several k and seeds:

* `pick_labelled(n, k, seed)` chooses the labelled images: the first k of a permutation seeded by ``seed``
  alone, so for one seed the sets are nested (the 5 images are among the 10, ...) and every arm sees the
  same images.
* `finetune_and_evaluate` trains one model in its own folder with `SegmentationTrainer` (binary targets,
  resumable: a killed run continues, a finished one returns at once) and scores it with
  `evaluate_arrays` (without the S- and E-measure, which no summary reads); the scores are cached in
  ``scores.json`` beside the checkpoint, keyed by the step reached and the evaluation set's size, so re-running a
  finished experiment costs nothing.
* `finetune_many` runs a list of such fine-tunes; on a CPU each runs on one thread, in as many processes as
  torch has threads (small models gain more from two single-thread processes than from two threads), so the
  scores do not depend on the number of processes.
* `few_label_data` gives the pool the k images come from and the test set: the procedural splits, or a labelled
  train folder and test folder (`helpers.data.folders.read_labelled`), never both.
* `summarise` turns the per-run records into mean, sample standard deviation (ddof = 1; 0 for one seed)
  and the values per (arm, k), the structure `helpers.core.plots.metric_vs_k` draws.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from helpers.core.io import write_json
from helpers.core.paths import resolve
from helpers.data.folders import read_labelled
from helpers.data.splits import ProceduralSplits, load_split
from helpers.segmentation import ArrayBatches, SegmentationSettings, SegmentationTrainer, evaluate_arrays
from helpers.segmentation.sources import Batch, BatchSource, batch_function

SCORES_FILE = "scores.json"


class FewLabelData(NamedTuple):
    """The labelled pool (images, class labels) the k images come from, and the test set."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str


def few_label_data(
    procedural: ProceduralSplits | None, train_folder: str, test_folder: str, image_size: int
) -> FewLabelData:
    """The procedural train/test splits (``procedural``), or the two labelled folders read at ``image_size``:
    exactly one source must be given, and a train folder needs a test folder."""
    if (procedural is None) == (not train_folder):
        raise ValueError(
            "the labelled images come from one place: the procedural splits (PROCEDURAL_SPLIT = True) or a "
            f"TRAIN_FOLDER with a TEST_FOLDER; got PROCEDURAL_SPLIT = {procedural is not None}, "
            f"TRAIN_FOLDER = {train_folder!r}"
        )
    if procedural is not None:
        return FewLabelData(*load_split(procedural, "train"), *load_split(procedural, "test"), "procedural splits")
    if not test_folder:
        raise ValueError(f"TRAIN_FOLDER {train_folder!r} needs a TEST_FOLDER to score the fine-tuned models on")
    train, test = (read_labelled(resolve(f), image_size) for f in (train_folder, test_folder))
    return FewLabelData(train.images, train.labels, test.images, test.labels, f"{train_folder} -> {test_folder}")


def pick_labelled(n: int, k: int, seed: int) -> np.ndarray:
    """Indices of k distinct images out of n for ``seed``: nested in k, independent of everything else."""
    if not 1 <= k <= n:
        raise ValueError(f"cannot pick {k} labelled images out of {n}")
    return np.random.default_rng(seed).permutation(n)[:k]


class BinaryTargets:
    """A batch source with its labels turned into object (label ≥ 1) vs background, e.g. around `ShardBatches`."""

    def __init__(self, source: BatchSource):
        self.next_batch = batch_function(source)

    def __call__(self, step: int) -> Batch:
        """Batch ``step`` of the wrapped source with binary long targets."""
        batch = self.next_batch(step)
        return batch[0], (batch[1] > 0).long()


def finetune_settings(steps: int, lr: float, seed: int) -> SegmentationSettings:
    """The few-label schedule: Adam at ``lr``, 5x lower for the last quarter of the steps, a checkpoint halfway."""
    return SegmentationSettings(
        steps=steps, lr=lr, lr_step=max(1, steps * 3 // 4), lr_gamma=0.2, checkpoint_every=max(1, steps // 2), seed=seed
    )


def finetune_and_evaluate(
    run_dir: str | os.PathLike,
    model: nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    eval_images: np.ndarray,
    eval_gt: np.ndarray,
    settings: SegmentationSettings,
    batch_size: int,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> dict[str, float]:
    """Fine-tunes ``model`` on uint8 ``images`` with ``labels > 0`` (resumably, in ``run_dir``), then scores it.

    Returns `evaluate_arrays` on ``eval_images`` / bool ``eval_gt``, read from the cache when the run was
    already finished and scored on a set of the same size.
    """
    run_dir = Path(run_dir)
    trainer = SegmentationTrainer(run_dir, model, settings, device)
    source = ArrayBatches(images, np.asarray(labels) > 0, min(batch_size, len(images)), seed=settings.seed)
    step = trainer.train(source, progress=progress)
    cache = run_dir / SCORES_FILE
    if cache.exists():
        cached = json.loads(cache.read_text())
        if cached["step"] == step and cached["scores"]["n_images"] == len(eval_images):
            return cached["scores"]
    scores = evaluate_arrays(trainer.model, eval_images, eval_gt, structure=False)  # IoU and F_max are reported
    write_json(cache, {"step": step, "scores": scores})
    return scores


class FinetuneJob(NamedTuple):
    """One fine-tune of `finetune_many`: its folder, the model, its k labelled images and the settings."""

    run_dir: Path
    model: nn.Module
    images: np.ndarray
    labels: np.ndarray
    settings: SegmentationSettings


_worker_eval: tuple[np.ndarray, np.ndarray] | None = None  # a worker process's evaluation set


def _start_worker(eval_images: np.ndarray, eval_gt: np.ndarray) -> None:
    global _worker_eval
    torch.set_num_threads(1)
    _worker_eval = eval_images, eval_gt


def _run_job(job: FinetuneJob, batch_size: int) -> dict[str, float]:
    return finetune_and_evaluate(
        job.run_dir, job.model, job.images, job.labels, *_worker_eval, job.settings, batch_size, "cpu"
    )


def finetune_many(
    jobs: Sequence[FinetuneJob],
    eval_images: np.ndarray,
    eval_gt: np.ndarray,
    batch_size: int,
    device: torch.device | str = "cpu",
    workers: int | None = None,
    progress: bool = True,
) -> list[dict[str, float]]:
    """`finetune_and_evaluate` of every job, scores in job order. On a CPU every job runs on one thread, in
    ``workers`` processes (default: torch's number of threads); on a GPU they run one after the other here.
    The jobs' models are trained in their folders, not in place: resume a folder to get the trained weights."""
    bar = tqdm(total=len(jobs), desc="fine-tuning", disable=not progress)
    if torch.device(device).type != "cpu":
        scores = []
        for job in jobs:
            scores.append(
                finetune_and_evaluate(
                    job.run_dir,
                    job.model,
                    job.images,
                    job.labels,
                    eval_images,
                    eval_gt,
                    job.settings,
                    batch_size,
                    device,
                )
            )
            bar.update(1)
        bar.close()
        return scores
    workers = min(workers or torch.get_num_threads(), len(jobs)) or 1
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no inherited OpenMP state
    results: list[dict[str, float] | None] = [None] * len(jobs)
    with ProcessPoolExecutor(workers, context, _start_worker, (eval_images, eval_gt)) as pool:
        futures = {pool.submit(_run_job, job, batch_size): i for i, job in enumerate(jobs)}
        for future in as_completed(futures):
            results[futures[future]] = future.result()
            bar.update(1)
    bar.close()
    return results


def summarise(records: Iterable[Mapping[str, Any]], metric: str = "iou") -> dict[str, dict[str, dict[str, Any]]]:
    """{arm: {str(k): {mean, std, n, values}}} of ``metric`` over records with ``arm``, ``k``, ``seed`` and it."""
    grouped: dict[str, dict[int, list[tuple[int, float]]]] = {}
    for r in records:
        grouped.setdefault(r["arm"], {}).setdefault(int(r["k"]), []).append((int(r["seed"]), float(r[metric])))
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    for arm, per_k in grouped.items():
        summary[arm] = {}
        for k in sorted(per_k):
            values = [v for _, v in sorted(per_k[k])]
            summary[arm][str(k)] = {
                "mean": float(np.mean(values)),
                "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                "n": len(values),
                "values": values,
            }
    return summary
