"""The eight flips and quarter turns of the square, for augmentation and for test-time averaging.

The procedural domain has no preferred orientation (objects and backgrounds are drawn at any angle), so a
segmentation network should give the same answer for every view of an image. `DihedralAverage` makes it so
at test time by averaging its softmax over the eight views (beyond the papers, which score one view).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

N_VIEWS = 8


def dihedral(x: Tensor, view: int, dims: tuple[int, int] = (-2, -1)) -> Tensor:
    """View ``view`` (0-7) of ``x`` over ``dims``: ``view % 4`` quarter turns, then a mirror of ``dims[1]`` if
    ``view >= 4``."""
    if not 0 <= view < N_VIEWS:
        raise ValueError(f"view must be in 0..{N_VIEWS - 1}; got {view}")
    x = torch.rot90(x, view % 4, dims)
    return x.flip(dims[1]) if view >= 4 else x


def undo_dihedral(x: Tensor, view: int, dims: tuple[int, int] = (-2, -1)) -> Tensor:
    """The inverse of `dihedral`: maps a view's output back onto the original orientation."""
    if not 0 <= view < N_VIEWS:
        raise ValueError(f"view must be in 0..{N_VIEWS - 1}; got {view}")
    x = x.flip(dims[1]) if view >= 4 else x
    return torch.rot90(x, -(view % 4), dims)


def dihedral_pairs(x: Tensor, y: Tensor, views: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Inputs [B, C, H, W] and labels [B, H, W] with sample i of both under view ``views[i]``: augmentation
    that keeps each image and its labels aligned."""
    return (
        torch.stack([dihedral(xi, int(v)) for xi, v in zip(x, views)]),
        torch.stack([dihedral(yi, int(v)) for yi, v in zip(y, views)]),
    )


class DihedralAverage(nn.Module):
    """``model`` averaged over the eight views of its input [N, C, H, W].

    The output is the log of the mean softmax, so that softmax, arg-max and `foreground_probability` of it are
    the averaged probabilities and their decisions; it drops in wherever the model's logits are used.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.train(model.training)  # a new module is in training mode; take the model's, so wrapping changes nothing

    def forward(self, x: Tensor) -> Tensor:
        """log(mean over views of softmax(model(view)) mapped back), [N, K, H, W]."""
        total = None
        for view in range(N_VIEWS):
            probs = undo_dihedral(self.model(dihedral(x, view)).float().softmax(1), view)
            total = probs if total is None else total + probs
        return (total / N_VIEWS).clamp_min(torch.finfo(torch.float32).tiny).log()
