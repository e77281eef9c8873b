"""StyleGAN2-ADA network pickles (NVlabs stylegan2-ada-pytorch, and the StyleGAN2 networks of the stylegan3 code),
read without running code from the file, as the project's `StyleGAN2`
(docs/generators.md#stylegan2-ada-network-pickles).

Such a ``.pkl`` is a pickled dict (``G``, ``D``, ``G_ema``, ``augment_pipe``, ``training_set_kwargs``) whose networks
are NVlabs "persistent" objects: each is stored as a call of ``torch_utils.persistence._reconstruct_persistent_obj``
with its class name, the whole source file of its module (as text) and its attribute dict, and unpickling them the
usual way executes that source. `read_network_pickle` uses a restricted unpickler instead, in the spirit of
``torch.load(weights_only=True)``: the persistent objects become inert `PersistentObject` records (the source is
kept as text and never run), tensors are rebuilt from their storages with ``torch.load(weights_only=True)``, and the
few other globals such files use (``dnnlib.util.EasyDict``, ``collections.OrderedDict``, ``set``, numpy scalars of
plain number types; numpy arrays, which StyleGAN3 layers hold, as inert records) map to plain values; a tensor view
must lie inside its storage. Any other global is refused with an error that names it, before anything is called.

`generator_from_pickle` then checks that ``G_ema`` is a StyleGAN2 generator of a layout `StyleGAN2` computes exactly
(skip architecture, 3×3 modulated convs, leaky ReLU, RGB output, z and w of one width) and converts its tensors;
StyleGAN3 (alias-free) generators are refused by name. ADA computes its highest resolutions in float16; the
conversion computes everything in float32, so outputs differ from NVlabs' own by float16 rounding.

Command line: ``python -m helpers.gans.convert.ada_pickle network.pkl out.pt [--format ours|saic|rosinality]``.
"""

from __future__ import annotations

import argparse
import codecs
import io
import math
import pickle
import re
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from helpers.core.io import save_torch
from helpers.core.modules import load_strict
from helpers.gans.stylegan2 import StyleGAN2

SOURCE = "stylegan2-ada-pytorch network pickle"
PERSISTENCE_VERSION = 6  # the only version torch_utils.persistence writes and reads
FILTER = torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1])) / 64  # resample_filter [1, 3, 3, 1]


class NetworkPickleError(ValueError):
    """A network pickle that is refused: unsafe content, another architecture, or a damaged file."""


@dataclass
class PersistentObject:
    """An NVlabs persistent network object as data: its class name, attribute dict and module source (never run)."""

    class_name: str
    state: dict[str, Any]
    module_src: str = field(repr=False, default="")

    def modules(self) -> dict[str, Any]:
        """Its child modules by name (None entries dropped)."""
        return {k: v for k, v in (self.state.get("_modules") or {}).items() if v is not None}

    def tensors(self, prefix: str = "") -> Iterator[tuple[str, Tensor]]:
        """Every parameter and buffer of it and its children, with state-dict names."""
        for group in ("_parameters", "_buffers"):
            for name, value in (self.state.get(group) or {}).items():
                if value is not None:
                    yield prefix + name, value
        for name, child in self.modules().items():
            if isinstance(child, PersistentObject):
                yield from child.tensors(f"{prefix}{name}.")


class EasyDict(dict):
    """``dnnlib.util.EasyDict`` as a plain dict (attribute access is all the original adds)."""


def _persistent(meta: Any) -> PersistentObject:
    if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("state"), dict):
        raise NetworkPickleError(f"a persistent object of an unknown form: {type(meta).__name__}")
    if meta.get("version") != PERSISTENCE_VERSION:
        raise NetworkPickleError(
            f"persistent objects of version {meta.get('version')!r}; this reader knows version {PERSISTENCE_VERSION}"
        )
    return PersistentObject(str(meta["class_name"]), meta["state"], str(meta.get("module_src", "")))


def _storage(data: bytes) -> Any:
    """A tensor storage from the bytes of its own torch.save stream, read with weights_only=True."""
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _tensor(storage: Any, offset: int, size: tuple, stride: tuple, *rest: Any) -> Tensor:
    """torch's tensor rebuild, after checking that the view lies inside its storage (a larger one would grow it)."""
    if not isinstance(storage, torch.TypedStorage) or not all(isinstance(v, int) and v >= 0 for v in (*size, *stride)):
        raise NetworkPickleError("a tensor with a malformed storage, size or stride")
    extent = offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1 if all(size) else 0
    elements = storage._untyped_storage.nbytes() // storage.dtype.itemsize
    if not isinstance(offset, int) or offset < 0 or extent > elements:
        raise NetworkPickleError(f"a tensor view {tuple(size)} beyond its storage of {elements} elements")
    return torch._utils._rebuild_tensor_v2(storage, offset, size, stride, *rest[:2])


def _parameter(data: Tensor, requires_grad: bool = False, backward_hooks: Any = None) -> Tensor:
    return nn.Parameter(data, requires_grad=False)


class _Dtype:
    """``numpy.dtype`` as pickled: only plain number types, rebuilt by name (a real dtype's pickled state could
    describe object fields, whose values would be pointers taken from the file)."""

    def __init__(self, name: str, align: bool = False, copy: bool = True):
        if not isinstance(name, str) or not re.fullmatch(r"[fiub]\d{1,2}", name):
            raise NetworkPickleError(f"a numpy dtype {name!r} (only plain numbers are read)")
        self.name, self.order = name, "<"

    def __setstate__(self, state: tuple) -> None:
        if isinstance(state, tuple) and len(state) > 1 and state[1] in ("<", ">", "|", "="):
            self.order = state[1]

    def numpy(self) -> np.dtype:
        return np.dtype(self.order + self.name)


def _numpy_scalar(dtype: Any, data: Any = None) -> Any:
    """A numpy number such as a layer's ``weight_gain``, as a Python number."""
    if not isinstance(dtype, _Dtype) or not isinstance(data, bytes) or len(data) != dtype.numpy().itemsize:
        raise NetworkPickleError("a numpy scalar that is not a plain number")
    return np.frombuffer(data, dtype.numpy())[0].item()


class InertArray:
    """A numpy array of a network's attributes (StyleGAN3 layers keep sizes and rates so): recorded, never built."""

    def __init__(self, *args: Any):
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


SAFE_GLOBALS: dict[tuple[str, str], Callable[..., Any] | type] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _persistent,
    ("dnnlib.util", "EasyDict"): EasyDict,
    ("dnnlib", "EasyDict"): EasyDict,
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("__builtin__", "set"): set,
    ("torch._utils", "_rebuild_parameter"): _parameter,
    ("torch._utils", "_rebuild_tensor_v2"): _tensor,
    ("torch.storage", "_load_from_bytes"): _storage,
    ("numpy", "dtype"): _Dtype,
    ("numpy", "ndarray"): InertArray,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy.core.multiarray", "_reconstruct"): InertArray,
    ("numpy._core.multiarray", "_reconstruct"): InertArray,
    ("_codecs", "encode"): codecs.encode,  # protocol 2 writes bytes as latin-1 text
}


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only `SAFE_GLOBALS` and no persistent ids."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return SAFE_GLOBALS[module, name]
        except KeyError:
            raise NetworkPickleError(
                f"refused to load {module}.{name}: a network pickle may reference only tensors, NVlabs persistent "
                "networks and plain values, and this global could run code"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise NetworkPickleError(f"refused a persistent id {pid!r}: network pickles have none")


def read_network_pickle(path: str | Path) -> dict[str, Any]:
    """The top-level dict of a network pickle, read without executing anything from it."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = _RestrictedUnpickler(f).load()
    except NetworkPickleError as err:
        raise NetworkPickleError(f"{path}: {err}") from None
    except Exception as err:  # truncated or not a pickle
        raise NetworkPickleError(f"{path} is not a readable network pickle: {type(err).__name__}: {err}") from err
    if not isinstance(data, dict):
        raise NetworkPickleError(f"{path} holds a {type(data).__name__}, not the dict of a network pickle")
    return data


def _is_stylegan3(G: PersistentObject) -> bool:
    synthesis = G.modules().get("synthesis")
    names = synthesis.modules() if isinstance(synthesis, PersistentObject) else {}
    return "input" in names or "SynthesisInput" in G.module_src or "filtered_lrelu" in G.module_src


def _attr(obj: PersistentObject, name: str, where: str) -> Any:
    if name not in obj.state:
        raise NetworkPickleError(f"{where} has no attribute {name!r}: not a StyleGAN2-ADA generator")
    return obj.state[name]


def _ada_to_saic(ada: Mapping[str, Tensor], n_layers: int, resolutions: list[int]) -> dict[str, Tensor]:
    """The generator's tensors under our names (SAIC layout): modulation biases without the +1 of ADA's bias_init."""
    state = {"constant_tensor": ada["synthesis.b4.const"][None]}
    for i in range(n_layers):
        state[f"mapping.{2 * i + 1}.weight_orig"] = ada[f"mapping.fc{i}.weight"]
        state[f"mapping.{2 * i + 1}.bias_orig"] = ada[f"mapping.fc{i}.bias"]
    if "mapping.embed.weight" in ada:
        state["embed.weight_orig"], state["embed.bias_orig"] = ada["mapping.embed.weight"], ada["mapping.embed.bias"]

    def modulated(src: str, dst: str) -> None:
        state[f"{dst}.weight_orig"] = ada[f"{src}.weight"]
        state[f"{dst}.affine.weight_orig"] = ada[f"{src}.affine.weight"]
        state[f"{dst}.affine.bias"] = ada[f"{src}.affine.bias"] - 1

    for k, res in enumerate(resolutions):
        for src, slot in [("conv1", "2")] if k == 0 else [("conv0", "1"), ("conv1", "2")]:
            layer = f"synthesis.b{res}.{src}"
            modulated(layer, f"blocks.{k}.conv{slot}")
            strength = ada.get(f"{layer}.noise_strength", torch.zeros(()))  # use_noise=False: no noise
            state[f"blocks.{k}.addnoise{slot}.scale_factors"] = strength.reshape(1, 1, 1, 1)
            state[f"blocks.{k}.bias_act{slot}.bias"] = ada[f"{layer}.bias"]
        modulated(f"synthesis.b{res}.torgb", f"to_rgbs.{k}.conv1")
        state[f"to_rgbs.{k}.bias1.bias"] = ada[f"synthesis.b{res}.torgb.bias"].reshape(1, 3, 1, 1)
    return state


def generator_from_pickle(
    data: Mapping[str, Any], source: str = "network pickle", class_index: int = 0, truncation_psi: float = 0.5
) -> StyleGAN2:
    """``data['G_ema']`` as our StyleGAN2 in eval mode, loaded strictly; ``class_index`` picks the class of a
    class-conditional network. Refuses StyleGAN3 and every layout StyleGAN2 does not compute exactly, by name."""
    G = data.get("G_ema")
    if not isinstance(G, PersistentObject) or G.class_name != "Generator":
        found = type(G).__name__ if not isinstance(G, PersistentObject) else G.class_name
        raise NetworkPickleError(f"{source}: no generator under 'G_ema' (found {found}); keys {sorted(data)}")
    if _is_stylegan3(G):
        raise NetworkPickleError(
            f"{source} holds a StyleGAN3 (alias-free, -t or -r) generator, which this project does not implement: "
            "its Fourier-feature input and filtered, critically sampled layers have no counterpart in StyleGAN2 "
            "(docs/generators.md#stylegan2-ada-network-pickles)"
        )
    synthesis, mapping = G.modules().get("synthesis"), G.modules().get("mapping")
    if not isinstance(synthesis, PersistentObject) or not isinstance(mapping, PersistentObject):
        raise NetworkPickleError(f"{source}: the generator lacks its synthesis or mapping network")
    z_dim, w_dim, c_dim = (int(_attr(G, k, source)) for k in ("z_dim", "w_dim", "c_dim"))
    resolution, channels = int(_attr(G, "img_resolution", source)), int(_attr(G, "img_channels", source))
    ada = dict(G.tensors())
    resolutions = [4 * 2**k for k in range(int(math.log2(resolution)) - 1)]
    problems = []
    if channels != 3:
        problems.append(f"{channels} image channels (RGB only)")
    if z_dim != w_dim:
        problems.append(f"z_dim {z_dim} != w_dim {w_dim}")
    if resolution < 8 or resolution & (resolution - 1):
        problems.append(f"resolution {resolution} (a power of 2 from 8 on)")
    blocks = {name: b for name, b in synthesis.modules().items() if isinstance(b, PersistentObject)}
    if sorted(blocks, key=lambda n: int(n[1:]) if re.fullmatch(r"b\d+", n) else 0) != [f"b{r}" for r in resolutions]:
        problems.append(f"synthesis blocks {sorted(blocks)}")
    layers = [lay for b in blocks.values() for lay in b.modules().values() if lay.class_name == "SynthesisLayer"]
    architectures = {b.state.get("architecture") for b in blocks.values()}
    if architectures != {"skip"}:
        problems.append(f"architecture {sorted(map(str, architectures))} (skip only)")
    if {lay.state.get("activation") for lay in layers} != {"lrelu"}:
        problems.append("activations other than lrelu")
    if any(v.shape[-1] != 3 for k, v in ada.items() if re.fullmatch(r"synthesis\.b\d+\.conv[01]\.weight", k)):
        problems.append("convolutions other than 3x3")
    if any(not torch.allclose(v, FILTER) for k, v in ada.items() if k.endswith("resample_filter")):
        problems.append("a resample filter other than [1, 3, 3, 1]")
    clamps = {lay.state.get("conv_clamp") for lay in layers}
    if len(clamps) != 1:
        problems.append(f"per-layer conv clamps {sorted(map(str, clamps))}")
    n_layers = int(_attr(mapping, "num_layers", source))
    fcs = [mapping.modules().get(f"fc{i}") for i in range(n_layers)]
    gains = {float(_attr(fc, "bias_gain", f"{source} mapping.fc{i}")) for i, fc in enumerate(fcs) if fc is not None}
    if None in fcs or len(gains) != 1 or any(ada[f"mapping.fc{i}.weight"].shape[0] != w_dim for i in range(n_layers)):
        problems.append("a mapping network of other layer widths or learning rates")
    if c_dim and ada.get("mapping.embed.weight", torch.empty(0)).shape != (w_dim, c_dim):
        problems.append("a class embedding of another width than w_dim")
    if problems:
        raise NetworkPickleError(f"{source}: a generator this project cannot compute exactly: " + "; ".join(problems))
    if "mapping.w_avg" not in ada:
        raise NetworkPickleError(f"{source}: the mapping network has no w_avg (truncation needs it)")
    clamp = clamps.pop()
    first = ada["synthesis.b4.conv1.weight"].shape[0]
    widths = [ada[f"synthesis.b{r}.conv1.weight"].shape[0] for r in resolutions]
    fmap_max = max(widths)
    narrower = [(k, c) for k, c in enumerate(widths) if c < fmap_max]
    fmap_base = narrower[0][1] * 2 ** (narrower[0][0] + 1) if narrower else fmap_max * 2 ** len(widths)
    model = StyleGAN2(
        resolution,
        dim_z=z_dim,
        n_mlp=n_layers,
        fmap_base=fmap_base,
        fmap_max=fmap_max,
        truncation_psi=truncation_psi,
        lr_mul=gains.pop(),
        conv_clamp=None if clamp is None else float(clamp),
        c_dim=c_dim,
        class_index=class_index,
        source=SOURCE,
    )
    if model.channels != widths or first != widths[0]:
        raise NetworkPickleError(f"{source}: block widths {widths} follow no channel_base / channel_max rule")
    state = _ada_to_saic(ada, n_layers, resolutions)
    state.update({k: v for k, v in model.state_dict().items() if k.endswith(".kernel")})  # our fixed FIR kernels
    load_strict(model, state, source)
    model.latent_avg.copy_(ada["mapping.w_avg"])
    return model.eval()


def load_generator(path: str | Path, class_index: int = 0) -> StyleGAN2:
    """The ``G_ema`` of a network pickle file as our StyleGAN2 (see `generator_from_pickle`)."""
    return generator_from_pickle(read_network_pickle(path), str(path), class_index)


def main(argv: list[str] | None = None) -> None:
    from helpers.gans.checkpoints import save_model
    from helpers.gans.convert.stylegan2 import saic_to_rosinality

    parser = argparse.ArgumentParser(description="Converts a StyleGAN2-ADA network pickle's G_ema, read safely.")
    parser.add_argument("pickle", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument(
        "--format",
        choices=["ours", "saic", "rosinality"],
        default="ours",
        help="ours (every network), or SAIC / rosinality (networks without conv clamp and classes)",
    )
    parser.add_argument("--class-index", type=int, default=0, help="the class of a class-conditional network")
    args = parser.parse_args(argv)
    G = load_generator(args.pickle, args.class_index)
    if args.format == "ours":
        save_model(G, args.out, {"converted_from": str(args.pickle)})
    else:
        if G.config["conv_clamp"] is not None or G.config["c_dim"]:
            parser.error(f"the {args.format} format has no conv clamp or class embedding; use --format ours")
        saic = G.saic_checkpoint()
        rosinality = {"g_ema": saic_to_rosinality(saic["netGA"]), "latent_avg": saic["latent_avg"]}
        save_torch(saic if args.format == "saic" else rosinality, args.out)
    print(f"{args.pickle} -> {args.out} ({args.format}): {G.resolution} px, {G.config}")


if __name__ == "__main__":
    main()
