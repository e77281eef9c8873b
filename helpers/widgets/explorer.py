"""Live latent-direction explorer: original | shifted | mask, updated in place as the slider moves.

The view is three ipywidgets ``Image`` tiles under a direction dropdown, a magnitude slider and a seed
box; every change re-renders through ``render`` (one batched generator forward for z and z + r h). The
same Python API (``set``, ``render``) drives it without a browser, so tests and headless runs use it too.
"""

from __future__ import annotations

import io

import ipywidgets as widgets
import numpy as np
import torch
from PIL import Image
from torch import Tensor

from helpers.direction_masks.synthesis import raw_masks
from helpers.gans.base import Generator, to_uint8


def png_bytes(array: np.ndarray, scale: int = 1) -> bytes:
    """PNG encoding of a uint8 image (H x W or H x W x 3), enlarged ``scale`` times without smoothing."""
    image = Image.fromarray(array)
    if scale != 1:
        image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


class DirectionExplorer:
    """Dropdown of directions, magnitude slider and seed; shows G(z), G(z + r h) and the lighting mask."""

    def __init__(
        self,
        G: Generator,
        directions: dict[str, Tensor],
        magnitude: float = 5.0,
        max_magnitude: float = 10.0,
        seed: int = 0,
        scale: int = 4,
    ):
        if not directions:
            raise ValueError("DirectionExplorer needs at least one direction")
        self.G, self.directions, self.scale = G.eval(), {k: v.reshape(-1) for k, v in directions.items()}, scale
        self.direction = widgets.Dropdown(options=list(self.directions), description="direction")
        self.magnitude = widgets.FloatSlider(
            value=magnitude,
            min=-max_magnitude,
            max=max_magnitude,
            step=0.25,
            description="shift r",
            continuous_update=True,
        )
        self.seed = widgets.IntText(value=seed, description="seed")
        self.tiles = {name: widgets.Image(format="png") for name in ("original", "shifted", "mask")}
        captions = [widgets.VBox([widgets.Label(name), tile]) for name, tile in self.tiles.items()]
        self.widget = widgets.VBox([widgets.HBox([self.direction, self.magnitude, self.seed]), widgets.HBox(captions)])
        for control in (self.direction, self.magnitude, self.seed):
            control.observe(lambda _change: self.update(), names="value")
        self.update()

    @torch.no_grad()
    def render(self) -> dict[str, np.ndarray]:
        """The current original, shifted image (uint8 H x W x 3) and mask (uint8 H x W, 255 = object)."""
        z = self.G.sample_z(1, self.seed.value)
        shift = self.magnitude.value * self.directions[self.direction.value].to(z.device).reshape(1, -1)
        # one batched forward: the original is the zero shift, in whatever space the generator shifts
        shifts = torch.cat([torch.zeros_like(shift), shift])
        images = self.G.render_shifted(torch.cat([z, z]), shifts, [self.seed.value] * 2)
        mask = raw_masks(images[:1], images[1:], "lighting")[0]
        original, shifted = to_uint8(images)
        return {"original": original, "shifted": shifted, "mask": mask.byte().mul(255).cpu().numpy()}

    def update(self) -> dict[str, np.ndarray]:
        """Re-renders and replaces the three tiles in place; returns what it drew."""
        views = self.render()
        for name, array in views.items():
            self.tiles[name].value = png_bytes(array, self.scale)
        return views

    def set(
        self, direction: str | None = None, magnitude: float | None = None, seed: int | None = None
    ) -> dict[str, np.ndarray]:
        """Moves the controls as a user would (each change re-renders through the observers)."""
        if direction is not None:
            if direction not in self.directions:
                raise KeyError(f"unknown direction {direction!r}; choose from {list(self.directions)}")
            self.direction.value = direction
        if magnitude is not None:
            self.magnitude.value = magnitude
        if seed is not None:
            self.seed.value = seed
        return self.render()

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)
