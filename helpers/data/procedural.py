"""The embedded default domain: procedurally rendered "one object on a background" images.

Each image is a deterministic function of ``(seed, index, size)``: its random stream is
``np.random.default_rng([seed, stream, index])``, so any image can be re-rendered alone and a
dataset of n images is a prefix of the one with n + k images. Labels are exact geometry:
0 = background, 1 = object, 2 = object part (a distinct sub-region: a cap, a band, a spot or a
second lobe). Object and background colours come from the same distribution, so colour alone does
not separate them; shape, edges, shading and texture do.
"""

from __future__ import annotations

import time
from functools import lru_cache

import numpy as np

DOMAIN_VERSION = 1  # bump whenever rendering changes, so cached datasets are re-rendered
LABEL_NAMES = ("background", "object", "part")
MIN_SIZE, MAX_SIZE = 32, 256
_MIN_CONTRAST = 0.22  # RGB distance between the object colour and the background under it

F32 = np.float32


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [-1, 1] (x to the right, y downwards)."""
    t = ((np.arange(size, dtype=F32) + 0.5) / size) * 2 - 1
    return np.broadcast_to(t[None, :], (size, size)), np.broadcast_to(t[:, None], (size, size))


@lru_cache(maxsize=64)
def _interp_matrix(size: int, cells: int) -> np.ndarray:
    """[size, cells + 1] smoothstep interpolation weights from a coarse lattice to pixels."""
    pos = (np.arange(size, dtype=np.float64) + 0.5) / size * cells
    i0 = np.minimum(pos.astype(int), cells - 1)
    f = pos - i0
    f = f * f * (3 - 2 * f)
    w = np.zeros((size, cells + 1))
    w[np.arange(size), i0] = 1 - f
    w[np.arange(size), i0 + 1] = f
    return w.astype(F32)


def _noise(rng: np.random.Generator, size: int, cells: int, channels: int = 1) -> np.ndarray:
    """Smooth value noise in [0, 1]: a random lattice upsampled with smoothstep weights."""
    w = _interp_matrix(size, cells)
    lattice = rng.random((channels, cells + 1, cells + 1), dtype=F32)
    field = w @ lattice @ w.T
    return field[0] if channels == 1 else np.moveaxis(field, 0, -1)


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    k = (np.array([5.0, 3.0, 1.0]) + h * 6) % 6
    return (v - v * s * np.clip(np.minimum(k, 4 - k), 0, 1)).astype(F32)


def random_colour(rng: np.random.Generator) -> np.ndarray:
    """One RGB colour from the distribution shared by objects and backgrounds."""
    return _hsv_to_rgb(rng.random(), rng.uniform(0.1, 0.95), rng.uniform(0.15, 0.97))


def _mix(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    return a + (b - a) * t[..., None]


BACKGROUNDS = ("gradient", "radial", "noise", "stripes", "tiles", "blotches")
SHAPES = ("ellipse", "polygon", "blob", "star")


def _background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, str]:
    """A background of one of six kinds (BACKGROUNDS), and its kind."""
    x, y = _grid(size)
    c1, c2 = random_colour(rng), random_colour(rng)
    kind = rng.integers(6)
    angle = rng.uniform(0, 2 * np.pi)
    proj = np.cos(angle) * x + np.sin(angle) * y
    if kind == 0:  # linear gradient
        t = np.clip(0.5 + rng.uniform(0.3, 0.8) * proj, 0, 1)
    elif kind == 1:  # radial gradient around a random centre
        cx, cy = rng.uniform(-1, 1, 2)
        t = np.clip(np.hypot(x - cx, y - cy) / rng.uniform(1.0, 2.5), 0, 1)
    elif kind == 2:  # two octaves of value noise
        t = 0.7 * _noise(rng, size, int(rng.integers(2, 6))) + 0.3 * _noise(rng, size, int(rng.integers(6, 14)))
    elif kind == 3:  # soft stripes
        freq, sharp = rng.uniform(2, 9), rng.uniform(1, 6)
        t = 0.5 + 0.5 * np.tanh(sharp * np.sin(freq * np.pi * proj + rng.uniform(0, 2 * np.pi)))
    elif kind == 4:  # rotated tiles
        freq = rng.uniform(2, 6)
        orth = -np.sin(angle) * x + np.cos(angle) * y
        t = 0.5 + 0.5 * np.tanh(4 * np.sin(freq * np.pi * proj) * np.sin(freq * np.pi * orth))
    else:  # blotches: thresholded noise, camouflage-like
        t = 0.5 + 0.5 * np.tanh(12 * (_noise(rng, size, int(rng.integers(3, 9))) - 0.5))
    img = _mix(c1, c2, t.astype(F32))
    if rng.random() < 0.5:  # a third colour in smooth noise, for more varied palettes
        img = _mix(img, random_colour(rng), 0.6 * _noise(rng, size, int(rng.integers(2, 5))))
    return img, BACKGROUNDS[kind]


def _boundary(rng: np.random.Generator) -> tuple[str, dict]:
    """Draws the parameters of a star-shaped outline r(phi) in the object's own frame."""
    kind = SHAPES[rng.integers(4)]
    if kind == "polygon":
        return kind, {"n": int(rng.integers(3, 8)), "phase": rng.uniform(0, 2 * np.pi)}
    if kind == "blob":
        k = np.arange(2, 6)
        return kind, {"k": k, "amp": rng.uniform(0, 0.16, 4) / np.sqrt(k - 1), "phase": rng.uniform(0, 2 * np.pi, 4)}
    if kind == "star":
        return kind, {"n": int(rng.integers(4, 8)), "amp": rng.uniform(0.15, 0.3), "phase": rng.uniform(0, 2 * np.pi)}
    return kind, {}


def _radius(kind: str, p: dict, phi: np.ndarray) -> np.ndarray:
    if kind == "polygon":
        sector = 2 * np.pi / p["n"]
        return np.cos(np.pi / p["n"]) / np.cos(np.mod(phi + p["phase"], sector) - sector / 2)
    if kind == "blob":
        return 1 + sum(a * np.cos(k * phi + ph) for k, a, ph in zip(p["k"], p["amp"], p["phase"]))
    if kind == "star":
        return 1 + p["amp"] * np.cos(p["n"] * phi + p["phase"])
    return np.ones_like(phi)


class _Frame:
    """An object's local frame: unit radius, its own rotation and aspect ratio."""

    def __init__(self, cx: float, cy: float, radius: float, aspect: float, angle: float):
        self.cx, self.cy, self.radius, self.aspect = cx, cy, radius, aspect
        self.cos, self.sin = np.cos(angle), np.sin(angle)

    def local(self, x: np.ndarray, y: np.ndarray, dx: float = 0.0, dy: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        px, py = x - self.cx - dx, y - self.cy - dy
        return (self.cos * px + self.sin * py) / self.radius, (self.cos * py - self.sin * px) / (
            self.radius * self.aspect
        )


def _signed_distance(frame: _Frame, kind: str, p: dict, u: np.ndarray, v: np.ndarray, size: int) -> np.ndarray:
    """Approximate signed distance to the outline in pixels (negative inside)."""
    rho, phi = np.hypot(u, v), np.arctan2(v, u)
    return (rho - _radius(kind, p, phi)) * (frame.radius * frame.aspect * size / 2)


def _part_distance(rng: np.random.Generator, u: np.ndarray, v: np.ndarray, scale: float) -> np.ndarray:
    """Signed distance (pixels) of a part region inside the unit object: a cap, a band, a spot or a lobe."""
    angle = rng.uniform(0, 2 * np.pi)
    along = np.cos(angle) * u + np.sin(angle) * v
    kind = rng.integers(3)
    if kind == 0:  # cap: everything beyond a chord
        return (rng.uniform(0.15, 0.45) - along) * scale
    if kind == 1:  # band across the object
        return (np.abs(along - rng.uniform(-0.3, 0.3)) - rng.uniform(0.12, 0.22)) * scale
    offset, r = rng.uniform(0.1, 0.45), rng.uniform(0.22, 0.4)  # spot
    return (np.hypot(u - offset * np.cos(angle), v - offset * np.sin(angle)) - r) * scale


def _texture(rng: np.random.Generator, size: int, base: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Object surface colour: solid, stripes, spots or a two-tone gradient, in object coordinates."""
    kind = rng.integers(4)
    if kind == 0:
        return np.broadcast_to(base, u.shape + (3,))
    other = random_colour(rng)
    angle = rng.uniform(0, 2 * np.pi)
    along = np.cos(angle) * u + np.sin(angle) * v
    if kind == 1:
        t = 0.5 + 0.5 * np.tanh(3 * np.sin(rng.uniform(2, 5) * np.pi * along))
    elif kind == 2:
        t = (_noise(rng, size, int(rng.integers(4, 10))) > rng.uniform(0.55, 0.7)).astype(F32)
    else:
        t = np.clip(0.5 + 0.6 * along, 0, 1)
    return _mix(base, other, rng.uniform(0.35, 0.8) * t.astype(F32))


def _distinct_colour(rng: np.random.Generator, ref: np.ndarray, tries: int = 20) -> np.ndarray:
    """A colour at least _MIN_CONTRAST away from ref (the last draw if none is)."""
    for _ in range(tries):
        c = random_colour(rng)
        if np.linalg.norm(c - ref) >= _MIN_CONTRAST:
            return c
    return c


def render(seed: int, index: int, size: int = 64, stream: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Renders image ``index`` of ``(seed, stream)``: uint8 RGB [size, size, 3] and uint8 labels [size, size]."""
    image, labels, _ = _render(seed, index, size, stream)
    return image, labels


def attributes(seed: int, indices: range | list[int] | np.ndarray, size: int = 64, stream: int = 0) -> dict[str, list]:
    """What each image shows, by re-rendering it: ``background`` (BACKGROUNDS) and ``shape`` (SHAPES) per index."""
    found = [_render(seed, int(i), size, stream)[2] for i in indices]
    return {key: [a[key] for a in found] for key in ("background", "shape")}


def _render(seed: int, index: int, size: int, stream: int) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"size must be in [{MIN_SIZE}, {MAX_SIZE}], got {size}")
    rng = np.random.default_rng([seed, stream, index])
    x, y = _grid(size)
    img, background = _background(rng, size)

    frame = _Frame(
        *rng.uniform(-0.35, 0.35, 2), rng.uniform(0.3, 0.6), rng.uniform(0.55, 1.0), rng.uniform(0, 2 * np.pi)
    )
    kind, params = _boundary(rng)
    u, v = frame.local(x, y)
    dist = _signed_distance(frame, kind, params, u, v, size)
    inside = dist < 0
    px_scale = frame.radius * frame.aspect * size / 2

    # A soft drop shadow darkens the background next to the object.
    sdx, sdy = rng.uniform(-0.12, 0.12, 2)
    su, sv = frame.local(x, y, sdx, sdy)
    shadow = np.clip(0.5 - _signed_distance(frame, kind, params, su, sv, size) / (0.06 * size), 0, 1)
    img *= (1 - rng.uniform(0.15, 0.5) * shadow)[..., None]

    under = img[inside].mean(axis=0) if inside.any() else img.mean(axis=(0, 1))
    body = _texture(rng, size, _distinct_colour(rng, under), u, v)
    part_dist = _part_distance(rng, u, v, px_scale)
    part_alpha = np.clip(0.5 - part_dist, 0, 1)
    obj = _mix(body, _distinct_colour(rng, body.reshape(-1, 3).mean(axis=0)), part_alpha)

    # Pseudo-sphere shading lit from a random direction, with a small highlight.
    rho = np.minimum(np.hypot(u, v) / _radius(kind, params, np.arctan2(v, u)), 1)
    nz = np.sqrt(1 - 0.85 * rho**2)
    light = np.array([*rng.uniform(-0.7, 0.7, 2), 1.0], dtype=F32)
    light /= np.linalg.norm(light)
    lambert = np.clip((u * light[0] + v * light[1]) / 1.6 + nz * light[2], 0, 1)
    ambient = rng.uniform(0.35, 0.6)
    obj = obj * (ambient + (1 - ambient) * lambert)[..., None] + (rng.uniform(0, 0.35) * lambert**24)[..., None]

    alpha = np.clip(0.5 - dist, 0, 1)
    img = _mix(img, obj, alpha.astype(F32))
    img *= rng.uniform(0.75, 1.15)  # exposure
    img += rng.normal(0, rng.uniform(0, 0.04), img.shape).astype(F32)  # sensor grain

    labels = inside.astype(np.uint8)
    labels[inside & (part_dist < 0)] = 2
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), labels, {"background": background, "shape": kind}


def render_batch(
    seed: int, indices: range | list[int] | np.ndarray, size: int = 64, stream: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Renders several images: uint8 [N, size, size, 3] and labels uint8 [N, size, size]."""
    pairs = [render(seed, int(i), size, stream) for i in indices]
    images = np.stack([p[0] for p in pairs]) if pairs else np.zeros((0, size, size, 3), np.uint8)
    labels = np.stack([p[1] for p in pairs]) if pairs else np.zeros((0, size, size), np.uint8)
    return images, labels


def benchmark(size: int = 64, n: int = 1000, seed: int = 0) -> float:
    """Images rendered per second on the calling thread (after a short warm-up)."""
    render_batch(seed, range(10), size)
    start = time.perf_counter()
    render_batch(seed, range(n), size)
    return n / (time.perf_counter() - start)
