"""Live latent-direction explorer: original | shifted | mask, updated in place as the slider moves.

The view is three ipywidgets ``Image`` tiles under a direction dropdown (every candidate of notebook 03's
``candidates.pt``, in rank order, with `DirectionExplorer.from_candidates`), a magnitude slider and a seed box;
every change re-renders through ``render`` (one batched generator forward for z and z + r h). A button saves the
direction on screen, oriented by the slider's sign, as ``bg_direction.pth``. The same Python API (``set``,
``render``, ``save``) drives it without a browser, so tests and headless runs use it too.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import ipywidgets as widgets
import numpy as np
import torch
from PIL import Image
from torch import Tensor

from helpers.direction_masks.direction_files import record_choice, save_direction
from helpers.direction_masks.synthesis import raw_masks
from helpers.gans.base import Generator, to_uint8


def swatch(rgb: Sequence[int], outline: bool = False) -> str:
    """An HTML legend square of an RGB colour: filled, or (``outline``) a frame of it."""
    colour = "rgb({}, {}, {})".format(*(int(c) for c in rgb))
    look = f"border: 2px solid {colour}" if outline else f"background: {colour}; border: 1px solid #888"
    return f'<span style="display: inline-block; width: 12px; height: 12px; {look}"></span>'


def png_bytes(array: np.ndarray, scale: int = 1) -> bytes:
    """PNG encoding of a uint8 image (H x W or H x W x 3), enlarged ``scale`` times without smoothing."""
    image = Image.fromarray(array)
    if scale != 1:
        image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


class DirectionExplorer:
    """Dropdown of directions, magnitude slider and seed; shows G(z), G(z + r h) and the lighting mask.

    ``save_to`` (a ``bg_direction.pth`` path) adds the save button; without it `save` needs a path.
    """

    def __init__(
        self,
        G: Generator,
        directions: dict[str, Tensor],
        magnitude: float = 5.0,
        max_magnitude: float = 10.0,
        seed: int = 0,
        scale: int = 4,
        save_to: str | os.PathLike | None = None,
    ):
        if not directions:
            raise ValueError("DirectionExplorer needs at least one direction")
        self.G, self.directions, self.scale = G.eval(), {k: v.reshape(-1) for k, v in directions.items()}, scale
        self.save_to = None if save_to is None else Path(save_to)
        options = [(f"{rank}. {name}", name) for rank, name in enumerate(self.directions, 1)]
        self.direction = widgets.Dropdown(options=options, description="direction")
        self.magnitude = widgets.FloatSlider(
            value=magnitude,
            min=-max_magnitude,
            max=max_magnitude,
            step=0.25,
            description="shift r",
            continuous_update=True,
            layout=widgets.Layout(width="480px"),
        )
        self.seed = widgets.IntText(value=seed, description="seed", layout=widgets.Layout(width="160px"))
        self.tiles = {name: widgets.Image(format="png") for name in ("original", "shifted", "mask")}
        captions = {"original": "G(z)", "shifted": "G(z + r·h)", "mask": "mask"}
        columns = [widgets.VBox([widgets.Label(captions[name]), tile]) for name, tile in self.tiles.items()]
        self.legend = widgets.HTML(
            f"{swatch((255, 255, 255))} white: brighter in G(z + r·h), the object &nbsp; {swatch((0, 0, 0))} black: "
            "the rest"
        )
        self.save_button = widgets.Button(description="save as bg_direction.pth", layout=widgets.Layout(width="220px"))
        self.save_button.on_click(lambda _: self._save_clicked())
        self.status = widgets.HTML()
        controls = [self.direction, self.magnitude, self.seed]
        actions = [self.save_button, self.status] if self.save_to is not None else []
        self.widget = widgets.VBox([widgets.HBox(controls), widgets.HBox(columns), self.legend, widgets.HBox(actions)])
        for control in controls:
            control.observe(lambda _change: self.update(), names="value")
        self.update()

    @classmethod
    def from_candidates(cls, G: Generator, path: str | os.PathLike, **kwargs) -> DirectionExplorer:
        """An explorer over every candidate of a ``candidates.pt`` (notebook 03: names and oriented directions,
        best first)."""
        try:
            found = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - missing, truncated or not a torch file
            raise ValueError(f"{path} cannot be read as a candidates file: {type(err).__name__}: {err}") from None
        if not (isinstance(found, dict) and {"names", "directions"} <= set(found)):
            raise ValueError(f"{path} is not a candidates file: expected {{'names': [...], 'directions': [K, dim_z]}}")
        if len(found["names"]) != len(found["directions"]):
            raise ValueError(f"{path}: {len(found['names'])} names for {len(found['directions'])} directions")
        if found["directions"].shape[-1] != G.dim_z:
            raise ValueError(
                f"{path} holds directions of {found['directions'].shape[-1]} values; this generator's dim_z (of its "
                f"shift space) is {G.dim_z}: another generator or shift space than notebook 03's?"
            )
        return cls(G, dict(zip(found["names"], found["directions"])), **kwargs)

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

    def save(self, path: str | os.PathLike | None = None) -> Path:
        """Writes the direction on screen times the slider's sign (the shift that gives the mask shown) in the
        released format, to ``path`` or ``save_to``; a ``ranking.json`` beside it records the choice."""
        target = Path(path) if path is not None else self.save_to
        if target is None:
            raise ValueError("no path: give save(path) or the explorer's save_to")
        if self.magnitude.value == 0:
            raise ValueError("the shift r is 0: move the slider to the side whose mask marks the object")
        sign = 1.0 if self.magnitude.value > 0 else -1.0
        name = self.direction.value
        save_direction(target, sign * self.directions[name])
        record_choice(target, name, sign, chosen_by="direction explorer")
        return target

    def _save_clicked(self) -> None:
        """The button: saves, and says what was written or why not."""
        try:
            target = self.save(self.save_to)
        except ValueError as err:
            self.status.value = f"<b>not saved:</b> {err}"
        else:
            sign = "+" if self.magnitude.value > 0 else "−"
            self.status.value = f"saved {sign}{self.direction.value} to {target}"

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)
