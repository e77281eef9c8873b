"""The U-Net of "Big GANs Are Watching You" (the old milesial Pytorch-UNet layout), with a width knob.

With ``width=64`` the module names and shapes are those of the released ``u_net_imagenet.pth`` (13,395,394
parameters, 128 state-dict entries), so it loads with ``strict=True``. Smaller widths scale every channel
count (``width=16`` for the 64-px embedded default). Inputs of any size work: each up block pads the
upsampled map to its skip connection's size, split evenly between the two sides as in the reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class DoubleConv(nn.Module):
    """Two [3x3 conv -> BatchNorm -> ReLU] stages, held in ``double_conv`` for the reference key names."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.double_conv = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.double_conv(x)


class Down(nn.Module):
    """2x max-pooling then a DoubleConv, in ``maxpool_conv`` for the reference key names."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.maxpool_conv = nn.Sequential(nn.MaxPool2d(2), DoubleConv(in_channels, out_channels))

    def forward(self, x: Tensor) -> Tensor:
        return self.maxpool_conv(x)


class Up(nn.Module):
    """2x upsampling of the deeper map, padding to the skip's size, concatenation [skip, up], DoubleConv."""

    def __init__(self, in_channels: int, out_channels: int, bilinear: bool = True):
        super().__init__()
        if bilinear:
            self.up: nn.Module = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        else:
            self.up = nn.ConvTranspose2d(in_channels // 2, in_channels // 2, 2, stride=2)
        self.conv = DoubleConv(in_channels, out_channels)

    def forward(self, deep: Tensor, skip: Tensor) -> Tensor:
        deep = self.up(deep)
        dy, dx = skip.shape[-2] - deep.shape[-2], skip.shape[-1] - deep.shape[-1]
        deep = F.pad(deep, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        return self.conv(torch.cat([skip, deep], dim=1))


class OutConv(nn.Module):
    """1x1 convolution to class logits, in ``conv`` for the reference key names."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class UNet(nn.Module):
    """Four-level U-Net giving logits [B, n_classes, H, W] at input resolution; channel 1 is foreground."""

    def __init__(self, n_channels: int = 3, n_classes: int = 2, width: int = 64, bilinear: bool = True):
        super().__init__()
        self.n_channels, self.n_classes, self.width, self.bilinear = n_channels, n_classes, width, bilinear
        w = width
        self.inc = DoubleConv(n_channels, w)
        self.down1 = Down(w, 2 * w)
        self.down2 = Down(2 * w, 4 * w)
        self.down3 = Down(4 * w, 8 * w)
        self.down4 = Down(8 * w, 8 * w)
        self.up1 = Up(16 * w, 4 * w, bilinear)
        self.up2 = Up(8 * w, 2 * w, bilinear)
        self.up3 = Up(4 * w, w, bilinear)
        self.up4 = Up(2 * w, w, bilinear)
        self.outc = OutConv(w, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        x1 = self.inc(x)
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        x4 = self.down3(x3)
        x = self.down4(x4)
        x = self.up1(x, x4)
        x = self.up2(x, x3)
        x = self.up3(x, x2)
        x = self.up4(x, x1)
        return self.outc(x)
