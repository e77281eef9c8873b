"""The semantic-projection decoder (helpers.semantic_projection.decoder): layouts and shapes."""

import pytest
import torch

from helpers.gans import load
from helpers.semantic_projection.decoder import SemanticDecoder, build_decoder, generator_features


@pytest.mark.parametrize(
    "name, channels", [("default-stylegan2", [128, 128, 128, 64, 32]), ("default-biggan", [128, 128, 64, 32, 16])]
)
def test_decoder_shapes_on_default_generators(name, channels):
    G = load(name)
    decoder = build_decoder(G, num_classes=3)
    assert list(decoder.config["channels"].values()) == channels
    assert decoder.config["out_resolution"] == 64 and decoder.tail_upsamples == [False]
    features = generator_features(G, G.sample_z(2, 0))
    assert decoder(features).shape == (2, 3, 64, 64)


def test_reference_layout_and_tail():
    reference = SemanticDecoder(
        {f"res{4 * 2**i}": c for i, c in enumerate([512] * 5 + [256])}, out_resolution=512, image_resolution=1024
    )
    assert sum(p.numel() for p in reference.parameters()) == 4_942_530  # the released decoder's count
    small = SemanticDecoder({"res4": 8, "res8": 4}, num_classes=2, width=8, out_resolution=32, image_resolution=64)
    assert small.tail_upsamples == [True, True]
    out = small({"res4": torch.randn(1, 8, 4, 4), "res8": torch.randn(1, 4, 8, 8), "res16": torch.randn(1, 1, 16, 16)})
    assert out.shape == (1, 2, 64, 64)
    with pytest.raises(KeyError, match="res8"):
        small({"res4": torch.randn(1, 8, 4, 4)})
