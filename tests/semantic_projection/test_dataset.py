"""Synthetic datasets from a generator and a decoder (helpers.semantic_projection.dataset)."""

import json

import numpy as np
import pytest
import torch

from helpers.gans import load
from helpers.segmentation.shards import ShardDataset, shard_path
from helpers.semantic_projection.dataset import generate_dataset
from helpers.semantic_projection.decoder import accepts, build_decoder, predict


@pytest.mark.parametrize("name", ["default-biggan", "default-stylegan2"])
def test_generate_dataset_shards_and_resume(tmp_path, name):
    G = load(name)
    torch.manual_seed(0)
    decoder = build_decoder(G, width=8)
    folder = generate_dataset(G, decoder, tmp_path / "gen", n_total=5, shard_size=2, batch_size=2, progress=False)
    data = ShardDataset(folder)
    rows = data.read(range(5))
    assert rows["images"].shape == (5, 64, 64, 3) and rows["masks"].shape == (5, 64, 64)
    assert rows["z"].dtype == np.float32 and rows["z"].shape == (5, G.dim_z)
    noise_seeds = rows["noise_seed"].tolist()
    assert (noise_seeds == [-1] * 5) != accepts(G, "noise_seed")
    # each pair is reproducible from its stored inputs alone (up to float rounding: batch 1 here, 2 there)
    seed = None if noise_seeds[3] < 0 else [noise_seeds[3]]
    again = predict(G, decoder, rows["z"][3], seed)
    np.testing.assert_allclose(again.images[0].astype(int), rows["images"][3].astype(int), atol=1)
    assert (again.labels[0] == rows["masks"][3]).mean() > 0.999
    # an interrupted run is completed with identical content
    data.close()
    shard_path(folder, 1).unlink()
    generate_dataset(G, decoder, folder, n_total=5, shard_size=2, batch_size=2, progress=False)
    np.testing.assert_array_equal(ShardDataset(folder).read(range(5))["images"], rows["images"])
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["attrs"]["generator"] == type(G).__name__
    with pytest.raises(ValueError, match="different dataset"):
        generate_dataset(G, decoder, folder, n_total=5, shard_size=2, seed=1, progress=False)
