"""Segmentation models trained on (synthetic) image/mask pairs: the reference U-Net, HDF5 shards of training
pairs, batch sources, a resumable trainer, the reference evaluation protocol and dihedral test-time averaging."""

from helpers.segmentation.dihedral import DihedralAverage, dihedral, dihedral_pairs, undo_dihedral
from helpers.segmentation.inference import (
    SegmentationInference,
    class_probabilities,
    evaluate_arrays,
    evaluate_folder,
    evaluate_labels,
    foreground_probability,
    min_edge_size,
    multiclass_scores,
    predict_labels,
    predict_proba,
    predict_softmax,
)
from helpers.segmentation.shards import ShardDataset, write_shards
from helpers.segmentation.sources import ArrayBatches, Batch, BatchSource, ShardBatches, batch_function, images_to_input
from helpers.segmentation.train import SegmentationSettings, SegmentationTrainer, mean_loss_on, train_job
from helpers.segmentation.unet import UNet

__all__ = [
    "ArrayBatches",
    "Batch",
    "BatchSource",
    "DihedralAverage",
    "SegmentationInference",
    "SegmentationSettings",
    "SegmentationTrainer",
    "ShardBatches",
    "ShardDataset",
    "UNet",
    "batch_function",
    "class_probabilities",
    "dihedral",
    "dihedral_pairs",
    "evaluate_arrays",
    "evaluate_folder",
    "evaluate_labels",
    "foreground_probability",
    "images_to_input",
    "mean_loss_on",
    "min_edge_size",
    "multiclass_scores",
    "predict_labels",
    "predict_proba",
    "predict_softmax",
    "train_job",
    "undo_dihedral",
    "write_shards",
]
