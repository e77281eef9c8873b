"""StyleGAN2-ADA network pickles (helpers.gans.convert.ada_pickle), written here in NVlabs' format and read safely.

How the reference was established: the `Ref*` modules below are an independent implementation of the StyleGAN2-ADA
generator written from its documented definition (docs/generators.md#stylegan2-ada-network-pickles), with NVlabs'
module, parameter and buffer names, shapes and attribute types: equalized-lr fully connected layers (weight gain
lr / sqrt(in), bias gain lr, affine bias initialised to 1), normalize_2nd_moment, class embedding concatenated after
z, modulated 3x3 convolutions demodulated with eps 1e-8 and computed sample by sample, the up-sampling conv as a
stride-2 transposed conv followed by the [1, 3, 3, 1] filter (gain 4, padding 1), noise after demodulation, then
bias, leaky ReLU(0.2) x sqrt(2) and the clamp, ToRGB without demodulation, and the skip image upsampled by the same
filter (padding 2 / 1, gain 4). They share no code with helpers.gans and pickle themselves as NVlabs' persistence
does: a call of torch_utils.persistence._reconstruct_persistent_obj with {type, version 6, module_src, class_name,
state = the instance __dict__}.
"""

from __future__ import annotations

import math
import os
import pickle
import subprocess
import sys
import types
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers.gans.checkpoints import CheckpointError, load
from helpers.gans.convert.ada_pickle import NetworkPickleError, load_generator, read_network_pickle
from helpers.gans.stylegan2 import StyleGAN2

MODULE_SRC = "# the module source of the networks: kept as text, never run\nimport os\n"
FILTER = torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1])) / 64


@pytest.fixture(autouse=True)
def nvlabs_modules(monkeypatch):
    """The two module paths NVlabs pickles name, present only so that pickle can write references to them."""

    def _reconstruct_persistent_obj(meta):
        raise AssertionError("NVlabs' reconstruction (which runs module_src) must never be called")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    persistence = types.ModuleType("torch_utils.persistence")
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    util = types.ModuleType("dnnlib.util")
    util.EasyDict = type("EasyDict", (dict,), {"__module__": "dnnlib.util"})
    for name, module in [
        ("torch_utils", types.ModuleType("torch_utils")),
        ("torch_utils.persistence", persistence),
        ("dnnlib", types.ModuleType("dnnlib")),
        ("dnnlib.util", util),
    ]:
        monkeypatch.setitem(sys.modules, name, module)
    return util.EasyDict


class Persistent(nn.Module):
    """Pickles like an NVlabs persistent class."""

    def __reduce__(self):
        meta = dict(
            type="class", version=6, module_src=MODULE_SRC, class_name=type(self).__name__[3:], state=self.__dict__
        )
        return (sys.modules["torch_utils.persistence"]._reconstruct_persistent_obj, (meta,), None)


def easydict(**kwargs):
    return sys.modules["dnnlib.util"].EasyDict(kwargs)


class RefFullyConnectedLayer(Persistent):
    def __init__(self, n_in, n_out, activation="linear", lr_multiplier=1.0, bias_init=0.0):
        super().__init__()
        self.activation = activation
        self.weight = nn.Parameter(torch.randn(n_out, n_in) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([n_out], float(bias_init)) + 0.1 * torch.randn(n_out))
        self.weight_gain = np.float64(lr_multiplier / np.sqrt(n_in))
        self.bias_gain = lr_multiplier
        self._init_args, self._init_kwargs = (n_in, n_out), {"activation": activation, "lr_multiplier": lr_multiplier}

    def forward(self, x):
        x = x @ (self.weight * float(self.weight_gain)).T + self.bias * self.bias_gain
        return F.leaky_relu(x, 0.2) * math.sqrt(2) if self.activation == "lrelu" else x


def norm2(x):
    return x * (x.square().mean(1, keepdim=True) + 1e-8).rsqrt()


class RefMappingNetwork(Persistent):
    def __init__(self, z_dim, c_dim, w_dim, num_ws, num_layers, lr_multiplier=0.01):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws, self.num_layers, self.w_avg_beta = (
            z_dim, c_dim, w_dim, num_ws, num_layers, 0.995
        )  # fmt: skip
        if c_dim:
            self.embed = RefFullyConnectedLayer(c_dim, w_dim)
        for i in range(num_layers):
            n_in = z_dim + (w_dim if c_dim else 0) if i == 0 else w_dim
            setattr(self, f"fc{i}", RefFullyConnectedLayer(n_in, w_dim, "lrelu", lr_multiplier))
        self.register_buffer("w_avg", torch.randn(w_dim))

    def forward(self, z, c, psi):
        x = norm2(z)
        if self.c_dim:
            x = torch.cat([x, norm2(self.embed(c))], 1)
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        return self.w_avg.lerp(x, psi).unsqueeze(1).repeat(1, self.num_ws, 1)


def fir(x, pad0, pad1, up=1):
    """Zero insertion by ``up``, padding, then the [1, 3, 3, 1] filter as a true convolution with gain 4 (the gain
    of a x2 upsampling, whether the zeros come from here or from a stride-2 transposed conv)."""
    n, c, h, w = x.shape
    if up > 1:
        y = torch.zeros(n, c, h * up, w * up, dtype=x.dtype)
        y[:, :, ::up, ::up] = x
        x = y
    x = F.pad(x, [pad0, pad1, pad0, pad1])
    kernel = (FILTER * 4).flip(0, 1)[None, None].repeat(c, 1, 1, 1)
    return F.conv2d(x, kernel, groups=c)


class RefSynthesisLayer(Persistent):
    def __init__(self, n_in, n_out, w_dim, resolution, up=1, conv_clamp=None):
        super().__init__()
        self.resolution, self.up, self.use_noise, self.activation = resolution, up, True, "lrelu"
        self.conv_clamp, self.padding, self.act_gain = conv_clamp, 1, np.float64(np.sqrt(2))
        self.affine = RefFullyConnectedLayer(w_dim, n_in, bias_init=1)
        self.weight = nn.Parameter(torch.randn(n_out, n_in, 3, 3))
        self.noise_strength = nn.Parameter(0.3 * torch.randn(()))
        self.bias = nn.Parameter(0.1 * torch.randn(n_out))
        self.register_buffer("resample_filter", FILTER.clone())
        self.register_buffer("noise_const", torch.randn(resolution, resolution))

    def forward(self, x, w, noise):
        styles = self.affine(w)
        out = []
        for i in range(len(x)):
            weight = self.weight * styles[i][None, :, None, None]
            weight = weight * (weight.square().sum([1, 2, 3]) + 1e-8).rsqrt()[:, None, None, None]
            if self.up == 2:
                y = fir(F.conv_transpose2d(x[i : i + 1], weight.transpose(0, 1), stride=2), 1, 1)
            else:
                y = F.conv2d(x[i : i + 1], weight, padding=1)
            out.append(y)
        x = torch.cat(out) + noise * self.noise_strength
        x = F.leaky_relu(x + self.bias[None, :, None, None], 0.2) * float(self.act_gain)
        return x if self.conv_clamp is None else x.clamp(-self.conv_clamp, self.conv_clamp)


class RefToRGBLayer(Persistent):
    def __init__(self, n_in, w_dim, conv_clamp=None):
        super().__init__()
        self.conv_clamp, self.weight_gain = conv_clamp, np.float64(1 / np.sqrt(n_in))
        self.affine = RefFullyConnectedLayer(w_dim, n_in, bias_init=1)
        self.weight = nn.Parameter(torch.randn(3, n_in, 1, 1))
        self.bias = nn.Parameter(0.1 * torch.randn(3))

    def forward(self, x, w):
        styles = self.affine(w) * float(self.weight_gain)
        x = torch.cat([F.conv2d(x[i : i + 1], self.weight * styles[i][None, :, None, None]) for i in range(len(x))])
        x = x + self.bias[None, :, None, None]
        return x if self.conv_clamp is None else x.clamp(-self.conv_clamp, self.conv_clamp)


class RefSynthesisBlock(Persistent):
    def __init__(self, n_in, n_out, w_dim, resolution, conv_clamp=None, architecture="skip"):
        super().__init__()
        self.in_channels, self.resolution, self.architecture, self.is_last, self.img_channels = (
            n_in, resolution, architecture, False, 3
        )  # fmt: skip
        self.num_conv, self.num_torgb = (1 if n_in == 0 else 2), 1
        if n_in == 0:
            self.const = nn.Parameter(torch.randn(n_out, resolution, resolution))
        else:
            self.conv0 = RefSynthesisLayer(n_in, n_out, w_dim, resolution, up=2, conv_clamp=conv_clamp)
        self.conv1 = RefSynthesisLayer(n_out, n_out, w_dim, resolution, conv_clamp=conv_clamp)
        self.torgb = RefToRGBLayer(n_out, w_dim, conv_clamp)
        self.register_buffer("resample_filter", FILTER.clone())

    def forward(self, x, img, ws, noises):
        if self.in_channels == 0:
            x = self.conv1(self.const[None].repeat(len(ws), 1, 1, 1), ws[:, 0], noises[0])
        else:
            x = self.conv1(self.conv0(x, ws[:, 0], noises[0]), ws[:, 1], noises[1])
        y = self.torgb(x, ws[:, self.num_conv])
        return x, y if img is None else fir(img, 2, 1, up=2) + y


class RefSynthesisNetwork(Persistent):
    def __init__(self, w_dim, img_resolution, channel_base, channel_max, conv_clamp=None, architecture="skip"):
        super().__init__()
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, 3
        self.block_resolutions = [2**i for i in range(2, int(math.log2(img_resolution)) + 1)]
        channels = {r: min(channel_base // r, channel_max) for r in self.block_resolutions}
        for r in self.block_resolutions:
            n_in = channels[r // 2] if r > 4 else 0
            setattr(self, f"b{r}", RefSynthesisBlock(n_in, channels[r], w_dim, r, conv_clamp, architecture))
        self.num_ws = 2 * len(self.block_resolutions)

    def forward(self, ws, noises):
        x = img = None
        w_idx = n_idx = 0
        for r in self.block_resolutions:
            block = getattr(self, f"b{r}")
            x, img = block(x, img, ws[:, w_idx : w_idx + block.num_conv + 1], noises[n_idx : n_idx + block.num_conv])
            w_idx, n_idx = w_idx + block.num_conv, n_idx + block.num_conv
        return img


class RefGenerator(Persistent):
    def __init__(
        self, z_dim=8, c_dim=0, img_resolution=16, conv_clamp=None, architecture="skip", map_layers=2, channel_base=64
    ):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.img_resolution, self.img_channels = (
            z_dim,
            c_dim,
            z_dim,
            img_resolution,
            3,
        )
        synthesis_kwargs = easydict(channel_base=channel_base, channel_max=16, num_fp16_res=4, conv_clamp=conv_clamp)
        self.synthesis = RefSynthesisNetwork(z_dim, img_resolution, channel_base, 16, conv_clamp, architecture)
        self.num_ws = self.synthesis.num_ws
        self.mapping = RefMappingNetwork(z_dim, c_dim, z_dim, self.num_ws, map_layers)
        self._init_args = ()
        self._init_kwargs = dict(
            z_dim=z_dim,
            w_dim=z_dim,
            mapping_kwargs=easydict(num_layers=map_layers),
            synthesis_kwargs=synthesis_kwargs,
            c_dim=c_dim,
            img_resolution=img_resolution,
            img_channels=3,
        )

    def forward(self, z, c, psi, noises):
        return self.synthesis(self.mapping(z, c, psi), noises)


def write_pickle(path, G, protocol=3):
    """A snapshot as NVlabs' training loop writes it: G, D and G_ema in eval mode without gradients."""
    G = G.eval().requires_grad_(False)
    data = dict(training_set_kwargs=dict(class_name="training.dataset.ImageFolderDataset", path="x.zip"), G=G)
    data.update(D=None, G_ema=G, augment_pipe=None)
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    return path


def outputs(G: StyleGAN2, ref: RefGenerator, class_index=0, psi=0.7, n=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, ref.z_dim, generator=gen)
    noises = G.make_noise(n, noise_seed=seed)
    c = F.one_hot(torch.full((n,), class_index), ref.c_dim).float() if ref.c_dim else None
    with torch.no_grad():
        expected = ref(z, c, psi, noises)
        got = G.train()(z, truncation=psi, noise=noises)  # training mode: the raw image, unclamped as NVlabs gives it
    G.eval()
    return got, expected


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_every_protocol_loads_strict_and_matches_the_reference(tmp_path, protocol):
    torch.manual_seed(0)
    ref = RefGenerator()
    G = load_generator(write_pickle(tmp_path / "net.pkl", ref, protocol))
    assert G.config["source"] == "stylegan2-ada-pytorch network pickle" and G.config["n_mlp"] == 2
    assert G.channels == [16, 8, 4] and torch.equal(G.latent_avg, ref.mapping.w_avg)
    got, expected = outputs(G, ref)
    assert expected.abs().max() > 1  # unclamped values are compared too
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_conv_clamp_and_class_conditioning(tmp_path):
    torch.manual_seed(1)
    ref = RefGenerator(c_dim=4, conv_clamp=0.5)
    for k in (0, 3):
        G = load_generator(write_pickle(tmp_path / "net.pkl", ref), class_index=k)
        assert G.config["conv_clamp"] == 0.5 and G.config["c_dim"] == 4
        got, expected = outputs(G, ref, class_index=k)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    other, _ = outputs(load_generator(tmp_path / "net.pkl", class_index=1), ref)
    assert not torch.allclose(other, got)  # the class changes the images
    with pytest.raises(ValueError, match=r"class_index must lie in \[0, 4\)"):
        load_generator(tmp_path / "net.pkl", class_index=4)


def test_load_by_path_and_the_converter(tmp_path):
    torch.manual_seed(2)
    ref = RefGenerator(img_resolution=32)
    path = write_pickle(tmp_path / "net.pkl", ref)
    G = load(path)  # by path, as the notebooks' GENERATOR
    expected, _ = outputs(G, ref)
    for fmt in ("ours", "saic", "rosinality"):
        out = tmp_path / f"net_{fmt}.pt"
        subprocess.run(
            [sys.executable, "-m", "helpers.gans.convert.ada_pickle", str(path), str(out), "--format", fmt], check=True
        )
        again, _ = outputs(load(out), ref)
        torch.testing.assert_close(again, expected, rtol=1e-5, atol=1e-5, msg=fmt)
    clamped = write_pickle(tmp_path / "clamped.pkl", RefGenerator(conv_clamp=256.0))
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "helpers.gans.convert.ada_pickle",
            str(clamped),
            str(tmp_path / "x.pt"),
            "--format",
            "saic",
        ],
        capture_output=True,
        text=True,
    )
    assert refused.returncode != 0 and "no conv clamp or class embedding" in refused.stderr


def test_the_asset_check_of_the_released_network(tmp_path):
    from helpers import assets

    path = write_pickle(tmp_path / "network.pkl", RefGenerator())
    assert assets.ada_check(16)(path) == "StyleGAN2-ADA network pickle 16 px, G_ema loaded strictly"
    assert "16 px, not the released 1024 px" in assets.ada_check(1024)(path)
    (tmp_path / "bad.pkl").write_bytes(pickle.dumps({"G_ema": None}))
    with pytest.raises(NetworkPickleError, match="no generator under 'G_ema'"):
        assets.ada_check(1024)(tmp_path / "bad.pkl")


class RunsCode:
    """An object whose unpickling would run a shell command (the marker file proves whether it ran)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_code_in_a_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "ran"
    torch.manual_seed(3)
    ref = RefGenerator()
    ref.synthesis.b4.payload = RunsCode(marker)  # hidden deep inside a network's state
    path = write_pickle(tmp_path / "evil.pkl", ref)
    with pytest.raises(NetworkPickleError, match=r"refused to load (posix|nt|os)\.system"):
        read_network_pickle(path)
    with pytest.raises(CheckpointError, match="evil.pkl: refused to load"):
        load(path)
    assert not marker.exists()
    # the module source travels as text: a loader that ran it would create the marker
    global MODULE_SRC
    saved, MODULE_SRC = MODULE_SRC, f"open({str(marker)!r}, 'w').close()\n"
    try:
        G = load_generator(write_pickle(tmp_path / "net.pkl", RefGenerator()))
    finally:
        MODULE_SRC = saved
    assert isinstance(G, StyleGAN2) and not marker.exists()


class ForgedDtype:
    """A structured numpy dtype with an object field whose flags say it has none: its scalars would be pointers."""

    def __reduce__(self):
        real = np.dtype([("a", "O")])
        state = list(real.__reduce__()[2])
        state[-1] = 0
        return (np.dtype, real.__reduce__()[1], tuple(state))


class ForgedScalar:
    def __reduce__(self):
        import numpy._core.multiarray as multiarray  # the path numpy 2 writes

        return (multiarray.scalar, (ForgedDtype(), b"AAAAAAAA"))


class ForgedView:
    """A tensor whose size and stride reach far beyond its 4-element storage (torch would grow the storage)."""

    def __reduce__(self):
        storage = torch.zeros(4).untyped_storage()
        typed = torch.TypedStorage(wrap_storage=storage, dtype=torch.float32, _internal=True)
        return (torch._utils._rebuild_tensor_v2, (typed, 0, (2,), (1_000_000,), False, OrderedDict()))


def test_forged_numbers_and_oversized_tensors_are_refused(tmp_path):
    (tmp_path / "dtype.pkl").write_bytes(pickle.dumps({"G_ema": ForgedScalar()}, protocol=2))
    with pytest.raises(NetworkPickleError, match="a numpy dtype 'V8' .*only plain numbers"):
        read_network_pickle(tmp_path / "dtype.pkl")
    (tmp_path / "view.pkl").write_bytes(pickle.dumps({"G_ema": ForgedView()}, protocol=3))
    with pytest.raises(NetworkPickleError, match=r"a tensor view \(2,\) beyond its storage of 4 elements"):
        read_network_pickle(tmp_path / "view.pkl")


def test_other_architectures_are_refused_by_name(tmp_path):
    torch.manual_seed(4)
    with pytest.raises(NetworkPickleError, match=r"architecture \['resnet'\]"):
        load_generator(write_pickle(tmp_path / "resnet.pkl", RefGenerator(architecture="resnet")))
    sg3 = RefGenerator()
    sg3.synthesis.input = type("RefSynthesisInput", (Persistent,), {})()  # stylegan3's Fourier-feature input
    sg3.synthesis.input.size = np.broadcast_to(np.asarray(36), [2])  # its layers hold numpy arrays
    with pytest.raises(NetworkPickleError, match="StyleGAN3 .* which this project does not implement"):
        load_generator(write_pickle(tmp_path / "sg3.pkl", sg3))
    (tmp_path / "damaged.pkl").write_bytes(write_pickle(tmp_path / "ok.pkl", RefGenerator()).read_bytes()[:5000])
    with pytest.raises(NetworkPickleError, match="damaged.pkl is not a readable network pickle"):
        read_network_pickle(tmp_path / "damaged.pkl")


@pytest.mark.notebooks
def test_notebooks_take_a_network_pickle_by_path(tmp_path):
    """Notebooks 03-06 on a 64-px ADA network given by path, at smoke size; notebook 05 from four annotations of it."""
    from helpers.profiles import smoke_parameters
    from helpers.runner import list_notebooks, run_notebook
    from helpers.semantic_projection.annotations import AnnotationStore

    torch.manual_seed(5)
    path = write_pickle(tmp_path / "network.pkl", RefGenerator(z_dim=16, img_resolution=64, channel_base=256))
    store = AnnotationStore.create(tmp_path / "store", path, "multiclass", ["background", "object", "part"])
    rng = np.random.default_rng(0)
    for _ in range(4):
        mask = rng.integers(0, 3, (64, 64)).astype(np.uint8)
        mask[:8] = store.ignore_value
        store.save(mask, rng.standard_normal(16).astype(np.float32), noise_seed=int(rng.integers(2**31)))
    notebooks = {nb.stem[:2]: nb for nb in list_notebooks()}
    params = {**smoke_parameters(), "DEVICE": "cpu", "INTERACTIVE": False, "GENERATOR": str(path)}
    extra = {
        "04": {"MIN_CONSISTENCY": 0.0, "MAX_BORDER": 1.0},
        "05": {"ANNOTATIONS": str(store.root), "CURVE_COUNTS": "2"},
    }
    for name in ("03", "04", "05", "06"):
        run = run_notebook(notebooks[name], tmp_path / "results", {**params, **extra.get(name, {})}, timeout=600)
        assert run.status == "passed", (name, run.error)
