"""Tests for helpers.inspection.models: every kind of model source, rebuilt from its weights and loaded strictly."""

import json

import numpy as np
import pytest
import torch

from helpers.assets import check_unet
from helpers.core.io import write_json
from helpers.core.modules import weights_fingerprint
from helpers.inspection.models import load_model, synthetic_shards
from helpers.layermatch.models import build_segmentation_model
from helpers.segmentation import SegmentationSettings, SegmentationTrainer, UNet, write_shards


def same_outputs(a: torch.nn.Module, b: torch.nn.Module, size: int = 32) -> bool:
    x = torch.rand(2, 3, size, size) * 2 - 1
    for model in (a, b):  # a trainer keeps its model channels-last, which rounds differently
        model.to(memory_format=torch.contiguous_format)
    with torch.no_grad():
        return torch.equal(a.eval()(x), b.eval()(x))


def test_a_released_unet_file_loads_strictly_with_its_layout(tmp_path):
    torch.manual_seed(0)
    unet = UNet(width=64)
    torch.save(unet.state_dict(), tmp_path / "u_net_imagenet.pth")
    assert check_unet(tmp_path / "u_net_imagenet.pth").startswith("U-Net state dict")  # the released layout
    loaded = load_model(tmp_path / "u_net_imagenet.pth")
    assert loaded.architecture == "U-Net, width 64, 2 classes" and loaded.fingerprint == weights_fingerprint(unet)
    assert same_outputs(loaded.model, unet) and not loaded.model.training


def test_a_trainer_run_and_a_notebook_folder_lead_to_the_same_model(tmp_path):
    torch.manual_seed(0)
    trainer = SegmentationTrainer(
        tmp_path / "04" / "unsupervised", UNet(n_classes=3, width=4), SegmentationSettings(steps=1)
    )
    trainer.train(lambda step: (torch.rand(2, 3, 16, 16) * 2 - 1, torch.randint(0, 3, (2, 16, 16))))
    write_json(tmp_path / "04" / "metrics.json", {"final_model": str(trainer.run_dir)})
    by_run = load_model(trainer.run_dir)
    by_notebook = load_model("04", results=tmp_path)  # a run's name in the results folder
    assert by_run.architecture == "U-Net, width 4, 3 classes" and by_run.path == trainer.run_dir / "checkpoint.pt"
    assert by_notebook.path == by_run.path and same_outputs(by_run.model, trainer.model, 16)


def test_a_layermatch_model_is_rebuilt_from_its_keys(tmp_path):
    model = build_segmentation_model(2, backbone_config=dict(width=4, depths=[1, 2, 1, 1]), seed=3)
    torch.save(model.state_dict(), tmp_path / "finetuned.pt")
    loaded = load_model(tmp_path / "finetuned.pt")
    assert "width 4, depths [1, 2, 1, 1]" in loaded.architecture and same_outputs(loaded.model, model)


def test_anything_else_is_refused_with_the_file_named(tmp_path):
    torch.save({"weight": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt: not a U-Net or LayerMatch"):
        load_model(tmp_path / "other.pt")
    (tmp_path / "run").mkdir()
    write_json(tmp_path / "run" / "metrics.json", {"iou": 0.5})
    with pytest.raises(ValueError, match="names no final_model"):
        load_model(tmp_path / "run")
    with pytest.raises(FileNotFoundError, match="no weights file"):
        load_model(tmp_path / "nowhere")


def test_the_synthetic_pairs_of_a_model_are_found_above_its_weights(tmp_path):
    def pairs(shard_index, n):
        return {"images": np.zeros((n, 8, 8, 3), np.uint8), "masks": np.zeros((n, 8, 8), np.uint8)}

    shards = write_shards(tmp_path / "05" / "synthetic" / "k20", 4, pairs, shard_size=4, progress=False)
    (tmp_path / "05" / "unets" / "k20_s10").mkdir(parents=True)
    (tmp_path / "05" / "metrics.json").write_text(json.dumps({"synthetic_shards": str(shards)}))
    assert synthetic_shards(tmp_path / "05" / "unets" / "k20_s10" / "checkpoint.pt") == shards
    assert synthetic_shards(tmp_path / "elsewhere" / "model.pth") is None
