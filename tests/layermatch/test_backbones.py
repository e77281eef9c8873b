"""ResNet-style backbone (helpers.layermatch.backbones): stage shapes for both stems, odd input sizes, channels-last
batches, saving and loading."""

import pytest
import torch
import torch.nn.functional as F

from helpers.layermatch.backbones import STAGES, BasicBlock, ResNetBackbone, load_backbone, read_backbone, save_backbone


def _ceil_halvings(n: int, k: int) -> int:
    for _ in range(k):
        n = -(-n // 2)
    return n


@pytest.mark.parametrize("stem, sizes", [("small", [64, 32, 16, 8, 4]), ("imagenet", [32, 16, 8, 4, 2])])
def test_stage_shapes_at_64_px(stem, sizes):
    model = ResNetBackbone(width=8, depths=(1, 2, 1, 1), stem=stem).eval()
    features = model(torch.randn(2, 3, 64, 64))
    assert list(features) == list(STAGES)
    assert model.channels == [8, 8, 16, 32, 64]
    assert [tuple(f.shape) for f in features.values()] == [(2, c, s, s) for c, s in zip(model.channels, sizes)]
    assert model.stage_sizes(64) == sizes
    assert [64 // s for s in sizes] == model.strides


@pytest.mark.parametrize("stem, halvings", [("small", [0, 1, 2, 3, 4]), ("imagenet", [1, 2, 3, 4, 5])])
@pytest.mark.parametrize("height, width", [(37, 50), (65, 65), (17, 96)])
def test_odd_sizes_give_ceil_halvings(stem, halvings, height, width):
    model = ResNetBackbone(width=4, depths=(1, 1, 1, 1), stem=stem).eval()
    features = model(torch.randn(1, 3, height, width))
    for f, k in zip(features.values(), halvings):
        assert tuple(f.shape[-2:]) == (_ceil_halvings(height, k), _ceil_halvings(width, k))
    assert model.stage_sizes(height) == [_ceil_halvings(height, k) for k in halvings]


def test_invalid_arguments_raise():
    with pytest.raises(ValueError, match="stem"):
        ResNetBackbone(stem="cifar")
    with pytest.raises(ValueError, match="four stage depths"):
        ResNetBackbone(depths=(2, 2, 2))


def test_save_and_load_round_trip(tmp_path):
    model = ResNetBackbone(width=4, depths=(1, 1, 1, 1), stem="imagenet")
    with torch.no_grad():
        for b in model.buffers():
            if b.is_floating_point():
                b.add_(0.5)  # BN statistics must travel too
    path = save_backbone(model, tmp_path / "b.pt", meta={"method": "test"})
    loaded = load_backbone(path)
    assert loaded.config == model.config
    assert read_backbone(path)["meta"] == {"method": "test"}
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    x = torch.randn(1, 3, 40, 40)
    assert torch.equal(model.eval()(x)["layer4"], loaded.eval()(x)["layer4"])


def test_read_rejects_other_files(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a backbone file"):
        read_backbone(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError):
        read_backbone(tmp_path / "missing.pt")


def test_subsampled_shortcut_is_a_strided_1x1_conv():
    block = BasicBlock(4, 8, stride=2).eval()
    x = torch.randn(2, 4, 13, 10)
    conv, bn = block.shortcut[1], block.shortcut[2]
    with torch.no_grad():
        assert torch.allclose(block.shortcut(x), bn(F.conv2d(x, conv.weight, stride=2)), atol=1e-6)


@pytest.mark.parametrize("stem", ["small", "imagenet"])
def test_backward_on_channels_last_batches(stem):
    """Permuted HWC batches (what array sources give) are channels-last; backward must work on them."""
    model = ResNetBackbone(width=8, depths=(1, 1, 1, 1), stem=stem)
    for _ in range(3):
        x = torch.rand(4, 64, 64, 3).permute(0, 3, 1, 2) * 2 - 1
        sum(f.square().mean() for f in model(x).values()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
