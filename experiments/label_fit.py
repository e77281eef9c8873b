"""`fit_direction` fits a latent direction *with labels*. It is a diagnosis (the best that one direction can do on
a generator, an upper bound for discovery plus ranking), not the method.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from helpers.direction_masks.synthesis import gray
from helpers.gans.base import Generator


def fit_direction(
    G: Generator,
    z: Tensor,
    masks: Tensor,
    magnitude: float,
    steps: int = 300,
    batch_size: int = 32,
    lr: float = 0.05,
    sharpness: float = 20.0,
    seed: int = 0,
    progress: bool = True,
) -> Tensor:
    """A unit direction fitted *with labels*: object pixels of ``masks`` [N, H, W] should get lighter in
    G(z + r h) and the rest darker (the LIGHTING rule), scored by the balanced soft fraction of pixels that do.

    Not part of the unsupervised method: it measures how good a single latent direction can be on a given
    generator, i.e. an upper bound for discovery plus ranking.
    """
    G = G.eval().requires_grad_(False)
    gen = torch.Generator().manual_seed(seed)
    h = torch.randn(G.dim_z, generator=gen).to(G.device).requires_grad_(True)
    opt = torch.optim.Adam([h], lr=lr)
    for _ in tqdm(range(steps), desc="fitting a direction to labels", disable=not progress):
        idx = torch.randint(len(z), (batch_size,), generator=gen)
        target = masks[idx].to(G.device).float()
        image, shifted = G.pair(z[idx].to(G.device), magnitude * F.normalize(h, dim=0))
        lighter = torch.sigmoid(sharpness * (gray(shifted) - gray(image).detach()))
        on_object = (lighter * target).sum((1, 2)) / target.sum((1, 2)).clamp_min(1)
        on_rest = ((1 - lighter) * (1 - target)).sum((1, 2)) / (1 - target).sum((1, 2)).clamp_min(1)
        loss = -(on_object + on_rest).mean() / 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return F.normalize(h.detach(), dim=0)
