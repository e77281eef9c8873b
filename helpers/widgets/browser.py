"""Browse a dataset sorted by IoU (worst first): image | prediction | ground truth | error map, one at a time.

A slider picks the position in the order; ``show`` does the same from Python, so tests and headless runs drive
it without a browser. Images without masks keep their own order and show image | prediction.
"""

from __future__ import annotations

import ipywidgets as widgets
import numpy as np
from PIL import Image

from helpers.inspection.datasets import InspectionSet, Predictions
from helpers.inspection.figures import case_panels
from helpers.widgets.explorer import png_bytes


class IoUBrowser:
    """Slider over the images of ``dataset`` in order of ``preds.iou`` (ascending), panels side by side."""

    def __init__(self, dataset: InspectionSet, preds: Predictions, height: int = 192):
        self.dataset, self.preds, self.height = dataset, preds, height
        n = len(dataset.images)
        self.order = np.arange(n) if preds.iou is None else np.argsort(preds.iou, kind="stable")
        self.slider = widgets.IntSlider(0, 0, n - 1, description="rank", continuous_update=False)
        self.caption = widgets.HTML()
        self.picture = widgets.Image(format="png")
        self.slider.observe(lambda change: self.show(change["new"]), names="value")
        self.widget = widgets.VBox([self.slider, self.caption, self.picture])
        self.show(0)

    def panels(self, position: int) -> np.ndarray:
        """The panels of the image at ``position`` of the order, each resized to ``height`` and joined left to right."""
        tiles = []
        for _, picture in case_panels(self.dataset, self.preds, int(self.order[position])):
            width = round(picture.shape[1] * self.height / picture.shape[0])
            tiles.append(np.asarray(Image.fromarray(picture).resize((width, self.height), Image.NEAREST)))
            tiles.append(np.full((self.height, 4, 3), 255, np.uint8))
        return np.concatenate(tiles[:-1], axis=1)

    def show(self, position: int) -> None:
        """Displays the image at ``position`` (0: the worst) with its name and score."""
        i = int(self.order[position])
        self.slider.value = position
        score = "" if self.preds.iou is None else f", IoU {self.preds.iou[i]:.3f}"
        names = "image | prediction" + (" | ground truth | errors" if self.dataset.masks is not None else "")
        self.caption.value = f"<b>{self.dataset.names[i]}</b> ({position + 1} of {len(self.order)}{score}): {names}"
        self.picture.value = png_bytes(self.panels(position))
