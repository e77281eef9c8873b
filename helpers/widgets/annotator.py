"""A brush annotator for generated images (ipycanvas), after the semantic-projection reference's Tk tool.

The generator draws an image from stored-able inputs (z, noise seed, truncation); the user paints
positive / negative (binary mode) or class labels (multiclass mode) with a round brush; unpainted pixels
stay *ignore*. OK saves the inputs and the mask into an `AnnotationStore` and shows the next image; Skip
shows the next image; Retrain trains a fresh decoder on all saved samples and shows its prediction on the
current image (unlike the reference it neither saves the current strokes nor skips ahead); Generate writes
a synthetic dataset of the chosen number of images with the latest decoder. A legend under the canvas gives each
brush's colour; the decoder's prediction is drawn as outlines in the class colour (binary: green), so it never
looks like a painted stroke, and a checkbox hides it.

Retrain and Generate run in a background thread: the kernel stays free, a progress bar counts epochs or
images, the canvas and the other buttons are locked (strokes are ignored) and **Stop** ends the job at the next
batch or epoch, keeping what is finished (complete shards, the fit's checkpoint; pressing the button again
resumes). From Python the same jobs run in the calling thread (``retrain()``, ``generate()``), where
Kernel → Interrupt stops them as any cell.

The mask lives in NumPy (store encoding, uint8 at the generator resolution); the canvas only displays it.
Strokes are rasterised in Python as the reference replays them: a disc at every point and a line of the
brush's width between consecutive points (pixels whose centres lie within ``size / 2`` of the polyline).
Everything is reachable from Python (`press`, `drag`, `release`, `undo`, `ok`, `skip`, `retrain`,
`generate`, `set_mode`, `set_brush`, `stop`, `wait`), which the canvas and button callbacks merely forward to;
``press``, ``drag`` and cursor positions are canvas (display) coordinates. Keys on the focused canvas: Ctrl+Z undo,
``[`` / ``]`` brush size.

Folder layout (as the reference's BASE_DIR): ``workdir/data`` (the store), ``workdir/checkpoints/vNNNNNN``
(one decoder fit per annotation version; an interrupted fit resumes, a finished one is reused) and
``workdir/generated/vNNNNNN-nCOUNT`` (a dataset of COUNT images made with that decoder).
"""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import numpy as np
from ipycanvas import MultiCanvas, hold_canvas
from PIL import Image
from scipy.ndimage import binary_erosion

from helpers.segmentation.shards import finished_samples
from helpers.semantic_projection.annotations import (
    BINARY_IGNORE,
    BINARY_NEGATIVE,
    BINARY_POSITIVE,
    MULTICLASS_IGNORE,
    Annotation,
    AnnotationStore,
)
from helpers.semantic_projection.dataset import draw_inputs, generate_dataset
from helpers.semantic_projection.decoder import SemanticDecoder, accepts, generate_images, load_decoder, predict
from helpers.semantic_projection.fitting import FitConfig, fit
from helpers.widgets.explorer import swatch

PREDICTION_RGB = (13, 198, 20)  # the reference's overlay colour for the positive class
OUTLINE_PX = 2  # width of the prediction's outlines on the canvas
STROKE_ALPHA = 0.6
GENERATE_COUNT = 1000  # images that Generate makes unless the count box says otherwise
PALETTE = np.array(
    [
        (255, 64, 64),
        (255, 255, 255),
        (64, 160, 255),
        (255, 200, 0),
        (200, 80, 255),
        (0, 220, 200),
        (255, 128, 0),
        (128, 255, 64),
    ],
    dtype=np.float32,
)


class Stopped(Exception):
    """A Retrain or Generate ended by Stop; the message says what was kept."""


Report = Callable[[int, int], None]  # (done, total): a job's progress


@dataclass(frozen=True)
class Latent:
    """The generator inputs of one displayed image (``index``: its position in the annotator's sequence)."""

    index: int
    z: np.ndarray
    noise_seed: int | None
    truncation: float | None


@dataclass
class Stroke:
    """One press-drag-release: the label value painted, brush size (image px) and points (image coords)."""

    value: int
    size: float
    points: list[tuple[float, float]]


def paint_segment(mask: np.ndarray, p0: tuple[float, float], p1: tuple[float, float], size: float, value: int) -> None:
    """Sets pixels whose centres lie within size/2 of the segment p0–p1 ((x, y) image coords) to value."""
    radius = size / 2
    (x0, y0), (x1, y1) = p0, p1
    h, w = mask.shape
    xa, xb = max(0, int(np.floor(min(x0, x1) - radius))), min(w, int(np.ceil(max(x0, x1) + radius)) + 1)
    ya, yb = max(0, int(np.floor(min(y0, y1) - radius))), min(h, int(np.ceil(max(y0, y1) + radius)) + 1)
    if xa >= xb or ya >= yb:
        return
    ys, xs = np.mgrid[ya:yb, xa:xb] + 0.5
    dx, dy = x1 - x0, y1 - y0
    length2 = dx * dx + dy * dy
    t = np.clip(((xs - x0) * dx + (ys - y0) * dy) / length2, 0, 1) if length2 > 0 else 0.0
    inside = (xs - x0 - t * dx) ** 2 + (ys - y0 - t * dy) ** 2 <= radius * radius
    mask[ya:yb, xa:xb][inside] = value


def _resize(image: np.ndarray, size: int, nearest: bool) -> np.ndarray:
    """Square resize for display (nearest for masks and upscaling, bilinear when shrinking images)."""
    if image.shape[0] == size:
        return image
    method = Image.NEAREST if nearest or image.shape[0] < size else Image.BILINEAR
    return np.asarray(Image.fromarray(image).resize((size, size), method))


class Annotator:
    """Brush annotator widget over a generator; display it with ``annotator.widget`` (module docstring)."""

    def __init__(
        self,
        workdir: str | os.PathLike,
        generator: str | os.PathLike | None = None,
        *,
        mode: str | None = None,
        classes: list[str] | None = None,
        seed: int | None = None,
        truncation: float | None = None,
        display_size: int = 384,
        brush_size: float | None = None,
        fit_config: FitConfig | None = None,
        device: str = "cpu",
        shard_size: int = 1000,
    ):
        """Opens (or creates, given ``generator``; mode default "binary") the store in workdir/data, shows an image.

        ``seed`` fixes the image sequence (default: random); ``truncation`` defaults to the generator's
        configured psi (StyleGAN2; 0.5 for SAIC checkpoints, as in the reference) and is recorded with every
        sample; ``brush_size`` is a diameter in image
        pixels (default resolution / 16); ``shard_size`` is the images per file that Generate writes.
        """
        self.workdir = Path(workdir)
        self.store = AnnotationStore.open_or_create(self.workdir / "data", generator, mode, classes)
        self.G = self.store.load_generator(device)
        self.seed = secrets.randbits(31) if seed is None else int(seed)
        if accepts(self.G, "truncation"):
            self.truncation = float(self.G.config.get("truncation_psi", 1.0) if truncation is None else truncation)
        elif truncation is not None:
            raise ValueError(f"{type(self.G).__name__} takes no truncation")
        else:
            self.truncation = None
        self.fit_config = fit_config or FitConfig(num_classes=self.store.num_classes)
        if self.fit_config.num_classes != self.store.num_classes:
            raise ValueError(
                f"fit_config.num_classes {self.fit_config.num_classes} != the store's {self.store.num_classes} classes"
            )
        self.resolution = self.store.resolution
        self.display_size = display_size
        self.scale = display_size / self.resolution
        self.brush_size = float(brush_size or max(1, self.resolution // 16))
        self.values = self._mode_values()
        self.mode = next(iter(self.values))
        self.decoder, self.decoder_dir = self._latest_decoder()
        self.shard_size = shard_size
        self._busy = False  # a background job runs: canvas and buttons locked
        self._drawing = threading.RLock()  # ipycanvas batches commands in one global, unlocked manager
        self._stop = threading.Event()
        self.job: threading.Thread | None = None
        self._job_name = ""
        self._build_widgets()
        self._show(0)

    # ------------------------------------------------------------------------------------------ state

    def _mode_values(self) -> dict[str, int]:
        """Brush modes and the mask value each paints."""
        if self.store.mode == "binary":
            return {"positive": BINARY_POSITIVE, "negative": BINARY_NEGATIVE, "ignore": BINARY_IGNORE}
        return {**{name: i for i, name in enumerate(self.store.classes)}, "ignore": MULTICLASS_IGNORE}

    def _latest_decoder(self) -> tuple[SemanticDecoder | None, Path | None]:
        """The decoder of the most recent finished fit in workdir/checkpoints, if any."""
        done = sorted((self.workdir / "checkpoints").glob("v*/decoder.pt"))
        if not done:
            return None, None
        return load_decoder(done[-1], self.G.device), done[-1].parent

    @property
    def current(self) -> Latent:
        """Inputs of the displayed image."""
        return self._current

    @property
    def mask(self) -> np.ndarray:
        """The mask being painted (uint8 [R, R], store encoding; a copy)."""
        return self._mask.copy()

    @property
    def image(self) -> np.ndarray:
        """The displayed generated image, uint8 [R, R, 3], without overlays."""
        return self._image

    @property
    def prediction(self) -> np.ndarray | None:
        """The decoder's class map for the current image (uint8 [R, R]), or None before any training."""
        return self._prediction

    @property
    def strokes(self) -> list[Stroke]:
        """Finished strokes of the current image, oldest first."""
        return list(self._history)

    def _latent(self, index: int) -> Latent:
        """Inputs of image ``index``: drawn from (seed, index), like synthetic datasets."""
        z, seeds = draw_inputs(self.G, self.seed, [index])
        return Latent(index, z[0], None if seeds is None else seeds[0], self.truncation)

    def _show(self, index: int) -> None:
        """Displays image ``index`` with a blank mask."""
        self._current = self._latent(index)
        self._mask = np.full((self.resolution, self.resolution), self.store.ignore_value, np.uint8)
        self._history: list[Stroke] = []
        self._stroke: Stroke | None = None
        self._update_prediction()
        self._render()

    def _update_prediction(self) -> None:
        """Regenerates the current image, with the decoder's prediction if there is a decoder."""
        latent = self._current
        seeds = None if latent.noise_seed is None else [latent.noise_seed]
        if self.decoder is None:
            image, prediction = generate_images(self.G, latent.z, seeds, latent.truncation)[0], None
        else:
            pred = predict(self.G, self.decoder, latent.z, seeds, latent.truncation)
            image, prediction = pred.images[0], pred.labels[0]
        with self._drawing:  # a background job's preview and the kernel thread read the pair together
            self._image, self._prediction = image, prediction

    # ---------------------------------------------------------------------------------------- painting

    def set_mode(self, mode: str | int) -> None:
        """Brush mode: "positive" / "negative" / "ignore" (binary), a class name or index, or "ignore"."""
        if isinstance(mode, (int, np.integer)) and self.store.mode == "multiclass":
            if not 0 <= mode < self.store.num_classes:
                raise ValueError(f"class index {mode} outside 0..{self.store.num_classes - 1}")
            mode = self.store.classes[mode]
        if mode not in self.values:
            raise ValueError(f"mode must be one of {list(self.values)}; got {mode!r}")
        self.mode = mode
        if self.mode_buttons.value != mode:
            self.mode_buttons.value = mode

    def set_brush(self, size: float) -> None:
        """Brush diameter in image pixels, clamped to [1, resolution]."""
        self.brush_size = float(min(max(size, 1), self.resolution))
        if self.brush_slider.value != round(self.brush_size):
            self.brush_slider.value = round(self.brush_size)

    def _to_image(self, x: float, y: float) -> tuple[float, float]:
        return x / self.scale, y / self.scale

    def press(self, x: float, y: float) -> None:
        """Starts a stroke at canvas point (x, y): paints a disc of the brush size with the mode's value.

        Ignored while Retrain or Generate runs (the canvas is locked)."""
        if self._busy:
            return
        self.release()
        point = self._to_image(x, y)
        self._stroke = Stroke(self.values[self.mode], self.brush_size, [point])
        paint_segment(self._mask, point, point, self.brush_size, self._stroke.value)
        self._draw_live(point, None)

    def drag(self, x: float, y: float) -> None:
        """Extends the current stroke to canvas point (x, y); without a pressed stroke it only moves the cursor
        (not while Retrain or Generate runs)."""
        if self._busy:
            return
        self._draw_cursor(x, y)
        if self._stroke is None:
            return
        previous, point = self._stroke.points[-1], self._to_image(x, y)
        self._stroke.points.append(point)
        paint_segment(self._mask, previous, point, self._stroke.size, self._stroke.value)
        self._draw_live(previous, point)

    def release(self) -> None:
        """Ends the current stroke (if any) and redraws the mask layer from the NumPy mask."""
        if self._stroke is not None:
            self._history.append(self._stroke)
            self._stroke = None
            self._render_mask()

    def undo(self) -> bool:
        """Removes the last stroke (replaying the others); returns whether there was one."""
        self._check_idle("Undo")
        self.release()
        if not self._history:
            return False
        self._history.pop()
        self._mask[:] = self.store.ignore_value
        for stroke in self._history:
            for p0, p1 in zip(stroke.points[:1] + stroke.points[:-1], stroke.points):
                paint_segment(self._mask, p0, p1, stroke.size, stroke.value)
        self._render_mask()
        return True

    # ----------------------------------------------------------------------------------------- buttons

    def ok(self) -> Annotation | None:
        """Saves the current inputs and mask (if anything was painted) and shows the next image."""
        self._check_idle("OK")
        self.release()
        saved = None
        if self._history:
            c = self._current
            saved = self.store.save(self._mask, c.z, c.noise_seed, c.truncation)
        self._show(self._current.index + 1)
        return saved

    def skip(self) -> None:
        """Shows the next image without saving."""
        self._check_idle("Skip")
        self._show(self._current.index + 1)

    def retrain(
        self,
        config: FitConfig | None = None,
        progress: bool = True,
        stop: threading.Event | None = None,
        report: Report | None = None,
    ) -> SemanticDecoder:
        """Trains a fresh decoder on all saved samples (resuming or reusing this version's fit); shows a prediction.

        ``report(epoch, epochs)`` follows the epochs; a set ``stop`` raises `Stopped` after the current epoch (the
        fit's last checkpoint stays, so the next Retrain resumes)."""
        self._check_idle("Retrain")
        config = config or self.fit_config
        samples = self.store.training_samples()
        if not samples:
            raise ValueError("no saved annotations yet: paint positive and negative strokes and press OK first")
        run_dir = self.workdir / "checkpoints" / f"v{self.store.version:06d}"

        def preview(epoch: int, decoder: SemanticDecoder) -> None:
            self.decoder = decoder
            self._update_prediction()
            self._render_image()
            if report is not None:
                report(epoch, config.epochs)  # epochs finished, 1 ... epochs
            if stop is not None and stop.is_set() and epoch < config.epochs:
                raise Stopped(
                    f"Retrain stopped after epoch {epoch} of {config.epochs}; Retrain resumes from its last "
                    f"checkpoint in {run_dir}"
                )

        previous = self.decoder
        try:
            result = fit(self.G, samples, run_dir, config, progress=progress, on_epoch=preview)
        except BaseException:  # interrupted or failed: keep showing the last finished decoder
            self.decoder = previous
            self._update_prediction()
            self._render_image()
            raise
        self.decoder, self.decoder_dir = result.decoder, run_dir
        self._update_prediction()
        self._render_image()
        return result.decoder

    def generate(
        self,
        n_total: int | None = None,
        shard_size: int | None = None,
        batch_size: int = 16,
        seed: int = 0,
        progress: bool = True,
        stop: threading.Event | None = None,
        report: Report | None = None,
    ) -> Path:
        """Writes ``n_total`` (default: the count box) synthetic pairs with the current decoder into
        workdir/generated/<decoder version>-n<n_total>, resuming that folder's finished shards.

        ``report(done, n_total)`` follows the images; a set ``stop`` raises `Stopped` at the next batch, keeping
        the complete shards (the next call with the same count resumes)."""
        self._check_idle("Generate")
        if self.decoder is None or self.decoder_dir is None:
            raise ValueError("no decoder yet: save some annotations and press Retrain first")
        n_total = int(self.count.value if n_total is None else n_total)
        if n_total < 1:
            raise ValueError(f"the number of images to generate must be positive; got {n_total}")
        folder = self.workdir / "generated" / f"{self.decoder_dir.name}-n{n_total}"
        attrs = {"generator": self.store.generator.to_json(), "decoder": str(self.decoder_dir / "decoder.pt")}

        def after_batch(end: int) -> None:
            if report is not None:
                report(end, n_total)
            if stop is not None and stop.is_set() and end < n_total:
                raise Stopped(
                    f"Generate stopped: {finished_samples(folder)} of {n_total} images, in complete shards, kept in "
                    f"{folder}; Generate {n_total} again resumes"
                )

        return generate_dataset(
            self.G,
            self.decoder,
            folder,
            n_total,
            shard_size or self.shard_size,
            batch_size,
            seed,
            self.truncation,
            attrs=attrs,
            progress=progress,
            after_batch=after_batch,
        )

    # ------------------------------------------------------------------------------------------- jobs

    def _check_idle(self, action: str) -> None:
        """Refuses an action while a background job runs, unless the job itself is the caller."""
        if self._busy and threading.current_thread() is not self.job:
            raise RuntimeError(f"{action} is not possible while {self._job_name} runs: press Stop or wait for it")

    def stop(self) -> None:
        """Asks the running Retrain or Generate to end at its next batch or epoch (the Stop button)."""
        self._stop.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Waits for the background job (if any) to end; returns whether none is running."""
        if self.job is not None:
            self.job.join(timeout)
        return not self._busy

    def _start(self, name: str, work: Callable[[Report], str]) -> None:
        """Runs ``work(report)`` in a background thread with the canvas and buttons locked and Stop enabled; its
        returned message, a `Stopped` message or an error goes to the status line."""
        if self._busy:
            return
        self.release()
        self._stop.clear()
        self._job_name = name
        self.progress.value, self.progress.max, self.progress.description = 0, 1, name
        self._set_busy(True)
        self.status.value = f"{name} running…"

        def report(done: int, total: int) -> None:
            self.progress.max, self.progress.value = max(total, 1), min(done, total)

        def run() -> None:
            message = f"{name} ended abnormally"
            try:
                message = work(report)
            except Stopped as stopped:
                message = str(stopped)
            except Exception as err:  # shown to the user; the widget stays usable
                message = f"<b>error:</b> {type(err).__name__}: {err}"
            finally:
                self._update_status(message)  # before the unlock: a job started next owns the status line
                self._set_busy(False)

        self.job = threading.Thread(target=run, name=f"annotator {name}", daemon=True)
        self.job.start()

    def _set_busy(self, busy: bool) -> None:
        self._busy = busy
        for button in self.buttons.values():
            button.disabled = busy
        self.buttons["Generate"].disabled = busy or self.decoder is None
        self.count.disabled = busy
        self.stop_button.disabled = not busy

    def _retrain_job(self, report: Report) -> str:
        self.retrain(progress=False, stop=self._stop, report=report)
        return f"decoder {self.decoder_dir.name} trained on {len(self.store)} annotations"

    def _generate_job(self, report: Report) -> str:
        folder = self.generate(progress=False, stop=self._stop, report=report)
        return f"wrote {finished_samples(folder)} images to {folder}"

    # ----------------------------------------------------------------------------------------- display

    def _build_widgets(self) -> None:
        """Canvas (image, mask, cursor layers), mode and brush controls, buttons, status and output."""
        size = self.display_size
        self.canvas = MultiCanvas(3, width=size, height=size, layout=widgets.Layout(width=f"{size}px"))
        self.canvas.on_mouse_down(self.press)
        self.canvas.on_mouse_move(self.drag)
        self.canvas.on_mouse_up(lambda x, y: self.release())
        self.canvas.on_mouse_out(self._leave)
        self.canvas.on_key_down(self._key)
        self.mode_buttons = widgets.ToggleButtons(options=list(self.values), value=self.mode, description="brush")
        self.mode_buttons.observe(lambda change: self.set_mode(change["new"]), names="value")
        self.brush_slider = widgets.IntSlider(
            value=round(self.brush_size), min=1, max=self.resolution, description="size (px)"
        )
        self.brush_slider.observe(lambda change: self.set_brush(change["new"]), names="value")
        actions = {"Undo": self.undo, "OK": self.ok, "Skip": self.skip}
        jobs = {"Retrain": self._retrain_job, "Generate": self._generate_job}
        self.buttons = {name: widgets.Button(description=name) for name in [*actions, *jobs]}
        for name, action in actions.items():
            self.buttons[name].on_click(lambda _, action=action: self._run(action))
        for name, job in jobs.items():
            self.buttons[name].on_click(lambda _, name=name, job=job: self._start(name, job))
        self.buttons["Generate"].disabled = self.decoder is None
        self.count = widgets.BoundedIntText(
            value=GENERATE_COUNT, min=1, max=10_000_000, description="images", layout=widgets.Layout(width="180px")
        )
        self.stop_button = widgets.Button(description="Stop", button_style="warning", disabled=True)
        self.stop_button.on_click(lambda _: self.stop())
        self.progress = widgets.IntProgress(value=0, min=0, max=1, layout=widgets.Layout(width="384px"))
        self.show_prediction = widgets.Checkbox(value=True, description="show prediction (outlines)", indent=False)
        self.show_prediction.observe(lambda _: self._render_image(), names="value")
        self.legend = widgets.HTML(self._legend())
        self.status = widgets.HTML()
        self.output = widgets.Output()
        self.widget = widgets.VBox(
            [
                self.canvas,
                self.legend,
                self.mode_buttons,
                self.brush_slider,
                widgets.HBox([*self.buttons.values(), self.count, self.stop_button]),
                widgets.HBox([self.progress, self.show_prediction]),
                self.status,
                self.output,
            ]
        )

    def _run(self, action: Any) -> None:
        """Runs a quick button action (Undo, OK, Skip); errors are shown, not raised into the frontend."""
        try:
            with self.output:
                action()
        except Exception as err:  # shown to the user; the widget stays usable
            self.status.value = f"<b>error:</b> {type(err).__name__}: {err}"
        else:
            self._update_status()

    def _key(self, key: str, shift: bool, ctrl: bool, meta: bool) -> None:
        if self._busy:
            return
        if key.lower() == "z" and (ctrl or meta):
            self.undo()
        elif key in ("[", "]"):
            self.set_brush(self.brush_size / 1.2 if key == "[" else self.brush_size * 1.2)

    def _leave(self, x: float, y: float) -> None:
        self.release()
        with self._drawing:
            self.canvas[2].clear()

    def _update_status(self, message: str = "") -> None:
        decoder = self.decoder_dir.name if self.decoder_dir else "none (press Retrain)"
        self.status.value = (message + "<br>" if message else "") + (
            f"image #{self._current.index} · {len(self.store)} saved · store version "
            f"{self.store.version} · decoder {decoder}"
        )

    def _prediction_colour(self, value: int) -> np.ndarray:
        """Outline colour of a predicted class (binary: the reference's green; multiclass: the class colour)."""
        return np.asarray(PREDICTION_RGB, np.uint8) if self.store.mode == "binary" else self._colour(value)

    def _legend(self) -> str:
        """HTML legend: each brush's colour, ignore, and how the prediction is drawn."""

        names = {"positive": "positive (object)", "negative": "negative (background)"}
        items = [f"{swatch(self._colour(v))} {names.get(m, m)}" for m, v in self.values.items() if m != "ignore"]
        classes = range(1, self.store.num_classes)
        outlines = "".join(swatch(self._prediction_colour(v), outline=True) for v in classes)
        items += ["unpainted: ignore", f"{outlines} prediction (outlines)"]
        return " &nbsp; ".join(items)

    def _colour(self, value: int) -> np.ndarray:
        """Display colour of a mask value."""
        if self.store.mode == "binary":
            return PALETTE[1] if value == BINARY_POSITIVE else PALETTE[0]
        return PALETTE[value % len(PALETTE)]

    def shown_image(self) -> np.ndarray:
        """The image layer as displayed (uint8 [display, display, 3]): the generated image with the outlines of
        the predicted non-background classes, unless the checkbox hides them."""
        with self._drawing:
            image, prediction = self._image, self._prediction
        shown = _resize(image, self.display_size, False).copy()
        if prediction is not None and self.show_prediction.value:
            labels = _resize(prediction, self.display_size, True)
            for value in range(1, self.store.num_classes):
                region = labels == value
                edge = region & ~binary_erosion(region, iterations=OUTLINE_PX, border_value=1)
                shown[edge] = self._prediction_colour(value)
        return shown

    def _render_image(self) -> None:
        """Image layer: `shown_image`."""
        shown = self.shown_image()
        with self._drawing:
            self.canvas[0].put_image_data(shown, 0, 0)

    def _render_mask(self) -> None:
        """Mask layer from the NumPy mask: painted pixels in their colour, ignore transparent."""
        rgba = np.zeros((self.resolution, self.resolution, 4), np.uint8)
        for value in np.unique(self._mask):
            if value != self.store.ignore_value:
                rgba[self._mask == value] = (*self._colour(int(value)).astype(np.uint8), round(255 * STROKE_ALPHA))
        with self._drawing, hold_canvas():
            self.canvas[1].clear()
            self.canvas[1].put_image_data(_resize(rgba, self.display_size, True), 0, 0)

    def _render(self) -> None:
        with self._drawing, hold_canvas():
            self._render_image()
            self._render_mask()
            self.canvas[2].clear()
        self._update_status()

    def _draw_live(self, p0: tuple[float, float], p1: tuple[float, float] | None) -> None:
        """Draws a disc (p1 None) or a round-capped segment on the mask layer now; release redraws exact pixels."""
        layer, (r, g, b), s = self.canvas[1], self._colour(self._stroke.value).astype(int), self.scale
        with self._drawing, hold_canvas():
            layer.fill_style = layer.stroke_style = f"rgba({r}, {g}, {b}, {STROKE_ALPHA})"
            if p1 is None:
                layer.fill_circle(p0[0] * s, p0[1] * s, self._stroke.size * s / 2)
            else:
                layer.line_width, layer.line_cap = self._stroke.size * s, "round"
                layer.stroke_line(p0[0] * s, p0[1] * s, p1[0] * s, p1[1] * s)

    def _draw_cursor(self, x: float, y: float) -> None:
        """Brush outline on the top layer, light for positive / class modes, dark for negative / ignore."""
        layer = self.canvas[2]
        with self._drawing, hold_canvas():
            layer.clear()
            layer.line_width = 2
            layer.stroke_style = "#8f8f8f" if self.mode in ("negative", "ignore") else "#f0f0f0"
            layer.stroke_circle(x, y, self.brush_size * self.scale / 2)
