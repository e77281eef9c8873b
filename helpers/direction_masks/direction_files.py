"""Direction files: the released ``bg_direction.pth`` format (one plain tensor [1, dim_z]), reading it back,
and the check that a found direction belongs to the generator and shift space it is used with.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from helpers.core.io import read_json, save_torch, write_json


def as_direction(direction: Tensor, dim_z: int) -> Tensor:
    """A direction as a [1, dim_z] row; accepts the released [dim_z] or [1, dim_z] tensors."""
    if tuple(direction.shape) not in ((dim_z,), (1, dim_z)):
        raise ValueError(f"direction must have shape [{dim_z}] or [1, {dim_z}], got {list(direction.shape)}")
    return direction.reshape(1, dim_z)


def save_direction(path: str | Path, direction: Tensor) -> Path:
    """Writes a direction in the released ``bg_direction.pth`` format: one plain tensor [1, dim_z]."""
    save_torch(direction.detach().cpu().float().reshape(1, -1), path)
    return Path(path)


def check_shift_space(direction_path: str | Path, generator: str, shift_space: str) -> None:
    """Refuses a direction that notebook 03 found for another generator or shift space, when the
    ``ranking.json`` beside it says so (a released file has none and is taken as it is)."""
    record = Path(direction_path).with_name("ranking.json")
    if not record.is_file():
        return
    found = read_json(record)
    wanted = {"generator": generator, "shift_space": shift_space}
    recorded = {
        "generator": found.get("generator"),
        "shift_space": found.get("shift_space", "z"),
    }  # z before SHIFT_SPACE
    clashes = [
        f"{key} {recorded[key]!r} (asked for {wanted[key]!r})"
        for key in wanted
        if recorded[key] is not None and recorded[key] != wanted[key]
    ]
    if clashes:
        raise ValueError(
            f"{direction_path} was found with {', '.join(clashes)} according to {record}; "
            "use the same settings as notebook 03"
        )


def load_direction(path: str | Path, dim_z: int | None = None) -> Tensor:
    """Reads a ``bg_direction.pth``-style file (a tensor of dim_z values, any leading 1s) as [dim_z]."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"direction file {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a corrupt file
        raise ValueError(f"{path} is not a readable torch file: {err}") from err
    if not isinstance(obj, Tensor) or obj.squeeze().dim() != 1:
        shape = tuple(obj.shape) if isinstance(obj, Tensor) else type(obj).__name__
        raise ValueError(f"{path} should hold one direction tensor of shape [dim_z] or [1, dim_z], got {shape}")
    direction = obj.squeeze().float()
    if dim_z is not None and len(direction) != dim_z:
        raise ValueError(f"{path} holds a direction of {len(direction)} values; the generator has dim_z = {dim_z}")
    if not torch.isfinite(direction).all():
        raise ValueError(f"{path} holds non-finite values (NaN or inf): a diverged or damaged direction")
    return direction


def record_choice(direction_path: str | Path, name: str, flip: float, chosen_by: str) -> None:
    """Notes in the ``ranking.json`` beside ``direction_path`` (if there is one) that the file now holds candidate
    ``name`` of ``candidates.pt`` (oriented as ranked) times ``flip`` (±1); ``sign`` stays what it means in the
    ranking, the factor on the raw candidate, and the scores are kept only when they describe that orientation."""
    record = Path(direction_path).with_name("ranking.json")
    if record.is_file():
        found = read_json(record)
        row = {r.get("name"): r for r in found.get("ranking", [])}.get(name, {"name": name})
        chosen = dict(row) if flip > 0 else {"name": name}
        chosen.update(sign=float(row.get("sign", 1.0)) * flip, chosen_by=chosen_by)
        found["chosen"] = chosen
        write_json(record, found)
