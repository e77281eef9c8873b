"""Where a latent shift acts: the raw latent z (the papers' G(z + r·h)), or the styles of a StyleGAN2.

A shift in z moves every layer of the generator, so it changes layout and colour together. In StyleGAN2
the per-layer styles w split these: the coarse layers set the layout and the fine ones the colours. A
shift of the fine layers' styles alone recolours an image without moving anything, which is what a
"darken the background, lighten the object" direction needs. ``StyleShifts`` applies a shift h to the
styles of the layers from a given resolution on: image = synthesis(w(z) on coarse layers, w(z) + s·h on
fine ones), with s the mean per-dimension spread of w, so that a unit direction times r = 5 moves w by
a comparable amount on any model. Everything else (``G(z)``, features, sampling) is the wrapped model's.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from helpers.gans.base import Generator
from helpers.gans.stylegan2 import StyleGAN2


def first_style(G: StyleGAN2, resolution: int) -> int:
    """Index of the first style that acts at ``resolution`` px or finer (styles 2k-1, 2k drive the convs
    of the block at 4·2^k px and 2k+1 its RGB output; the 4-px block uses styles 0 and 1)."""
    if resolution < 4 or resolution > G.resolution or resolution & (resolution - 1):
        raise ValueError(f"resolution must be a power of 2 in [4, {G.resolution}], got {resolution}")
    return max(2 * (resolution.bit_length() - 3) - 1, 0)


class StyleShifts(Generator):
    """A StyleGAN2 whose ``pair``, ``shifted`` and ``render_shifted`` shift the styles of the layers at
    ``resolution`` px and finer (4: all layers, i.e. W space) instead of z."""

    def __init__(self, G: StyleGAN2, resolution: int, n_spread: int = 4096, seed: int = 0):
        super().__init__()
        if not isinstance(G, StyleGAN2):
            raise TypeError(f"style shifts need a StyleGAN2, got {type(G).__name__}")
        self.G, self.from_resolution = G, resolution
        self.dim_z, self.resolution, self.config = G.dim_z, G.resolution, G.config
        layers = torch.zeros(G.n_styles, 1)
        layers[first_style(G, resolution) :] = 1
        self.register_buffer("layers", layers.to(G.device), persistent=False)
        with torch.no_grad():
            spread = torch.cat([G.styles(z) for z in G.sample_z(n_spread, seed).split(1024)]).std(0).mean()
        self.register_buffer("spread", spread, persistent=False)
        self.train(G.training)

    def forward(self, z: Tensor, **kwargs) -> Tensor:
        return self.G(z, **kwargs)

    def features(self, z: Tensor, **kwargs) -> OrderedDict[str, Tensor]:
        return self.G.features(z, **kwargs)

    def render(self, z: Tensor, noise_seeds: Sequence[int]) -> Tensor:
        return self.G.render(z, noise_seeds)

    def shift_coordinates(self, z: Tensor) -> Tensor:
        """w(z) in units of ``spread``: a shift h moves the shifted layers' styles to these plus h."""
        return self.G.styles(z) / self.spread

    def _w(self, z: Tensor) -> Tensor:
        return self.G.styles(z).unsqueeze(1).expand(-1, self.G.n_styles, -1)

    def _moved(self, w: Tensor, shift: Tensor) -> Tensor:
        return w + self.layers * (self.spread * shift.reshape(-1, 1, self.dim_z))

    def shifted(self, z: Tensor, shift: Tensor) -> Tensor:
        return self.G.synthesis(self._moved(self._w(z), shift), self.G.make_noise(len(z)))

    def render_shifted(self, z: Tensor, shift: Tensor, noise_seeds: Sequence[int]) -> Tensor:
        return self.G.synthesis(self._moved(self._w(z), shift), self.G.make_noise(len(z), list(noise_seeds)))

    def shift_renderer(self, z: Tensor, noise_seeds: Sequence[int]) -> Callable[[Tensor | None], Tensor]:
        """`render_shifted` of these latents for any shift, the unshifted layers computed once."""
        w, noise = self._w(z), self.G.make_noise(len(z), list(noise_seeds))
        trunk = self.G.synthesis_trunk(w, noise, first_style(self.G, self.from_resolution))
        return lambda shift: self.G.synthesis_finish(trunk, w if shift is None else self._moved(w, shift), noise)

    def pair(self, z: Tensor, shift: Tensor) -> tuple[Tensor, Tensor]:
        """G(z) and G shifted, with the layers below the shifted ones run once for both."""
        w = self._w(z)
        first = first_style(self.G, self.from_resolution)
        return self.G.synthesis_pair(w, self._moved(w, shift), self.G.make_noise(len(z)), first)


def with_shift_space(G: Generator, space: str) -> Generator:
    """``"z"``: G itself (shifts in the raw latent, the reference); ``"w"``: all StyleGAN2 styles;
    ``"w:R"``: the styles of the layers at R px and finer, e.g. ``"w:64"`` for a 64-px model's last block."""
    if space == "z":
        return G
    if space == "w":
        return StyleShifts(G, 4)
    if space.startswith("w:") and space[2:].isdigit():
        return StyleShifts(G, int(space[2:]))
    raise ValueError(f"shift space must be 'z', 'w' or 'w:<resolution>', got {space!r}")
