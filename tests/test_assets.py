"""helpers.assets against a local HTTP server on 127.0.0.1: downloads, resume, failures, lock file, CLI."""

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import assets
from helpers.assets import (
    Asset,
    AssetError,
    check_bigbigan,
    check_direction,
    check_embeddings,
    check_unet,
    ensure,
    main,
)
from helpers.core.manifest import sha256_file
from helpers.gans.biggan import BigGAN
from helpers.gans.checkpoints import KNOWN_FILES
from helpers.gans.stylegan2 import StyleGAN2

ROOT = Path(__file__).resolve().parents[1]


def npy_bytes(shape: tuple[int, ...]) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.arange(np.prod(shape), dtype=np.float32).reshape(shape))
    return buf.getvalue()


def torch_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


class Handler(BaseHTTPRequestHandler):
    """Serves server.files; server.modes[path] in {'500', 'html', 'truncate', 'truncate-once'} misbehaves."""

    def do_GET(self):
        srv = self.server
        srv.log.append((self.path, self.headers.get("Range")))
        mode, body = srv.modes.get(self.path), srv.files.get(self.path)
        if mode == "500":
            return self.send_error(500, "simulated server error")
        if body is None:
            return self.send_error(404)
        if mode == "html":
            body = b"<html><body>Preview</body></html>"
        start = int(self.headers["Range"][len("bytes=") : -1]) if self.headers.get("Range") else 0
        self.send_response(206 if start else 200)
        self.send_header("Content-Type", "text/html" if mode == "html" else "application/octet-stream")
        self.send_header("Content-Length", str(len(body) - start))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.end_headers()
        first = sum(p == self.path for p, _ in srv.log) == 1
        cut = mode == "truncate" or (mode == "truncate-once" and first)
        self.wfile.write(body[start : start + (len(body) - start) // 2] if cut else body[start:])

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.files, srv.modes, srv.log = {}, {}, []
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def serve(srv, path: str, body: bytes, mode: str | None = None) -> str:
    srv.files[path] = body
    if mode:
        srv.modes[path] = mode
    return srv.url + path


def embeddings_asset(*urls: str, sha256: str | None = None) -> Asset:
    return Asset("test-emb", "test_z.npy", "embeddings", urls, 0.01, sha256, check_embeddings, "test", "https://e.org")


def manual_asset(name: str, filename: str, hint: str) -> Asset:
    return Asset(name, filename, "weights", (), None, None, check_direction, "test", "https://e.org", hint)


def test_download_checks_and_records_in_lock(server, tmp_path):
    body = npy_bytes((3, 120))
    url = serve(server, "/z.npy", body)
    assert ensure(embeddings_asset(url), tmp_path, retries=1) == "downloaded"
    target = tmp_path / "embeddings" / "test_z.npy"
    assert target.read_bytes() == body
    assert sorted(p.name for p in target.parent.iterdir()) == ["assets.lock.json", "test_z.npy"]
    entry = json.loads((target.parent / "assets.lock.json").read_text())["files"]["test_z.npy"]
    assert entry["asset"] == "test-emb" and entry["url"] == url and entry["bytes"] == len(body)
    assert entry["sha256"] == sha256_file(target) and "(3, 120)" in entry["check"] and entry["date"]


def test_rerun_is_offline_and_hand_placed_files_are_verified(server, tmp_path):
    """Without a published sha256 a file in place is only known to be well-formed and unchanged: said so."""
    url = serve(server, "/z.npy", npy_bytes((3, 120)))
    ensure(embeddings_asset(url), tmp_path, retries=1)
    assert ensure(embeddings_asset(url), tmp_path) == "unverified: structure only"
    assert len(server.log) == 1
    manual = manual_asset("test-dir", "dir.pth", "by hand")
    assert ensure(manual, tmp_path) == "manual"
    (tmp_path / "weights").mkdir()
    torch.save(torch.randn(120), tmp_path / "weights" / "dir.pth")
    assert ensure(manual, tmp_path) == "recorded"
    assert ensure(manual, tmp_path) == "unverified: structure only"
    assert assets.read_lock(tmp_path / "weights")["dir.pth"]["url"] is None
    assert len(server.log) == 1


def test_broken_connection_resumes_with_range(server, tmp_path):
    body = npy_bytes((6000, 120))  # 2.9 MB: the first response stops after 1.4 MB, i.e. after one whole 1 MiB chunk
    url = serve(server, "/z.npy", body, "truncate-once")
    assert ensure(embeddings_asset(url), tmp_path, retries=2, retry_delay=0) == "downloaded"
    assert (tmp_path / "embeddings" / "test_z.npy").read_bytes() == body
    assert server.log == [("/z.npy", None), ("/z.npy", f"bytes={1 << 20}-")]


@pytest.mark.parametrize(
    "mode, reason",
    [
        ("truncate", r"IncompleteRead|truncated"),
        ("500", r"500 Server Error.*after 2 attempts"),
        ("html", r"HTML page"),
    ],
)
def test_failed_download_is_clear_and_leaves_nothing(server, tmp_path, mode, reason):
    url = serve(server, "/z.npy", npy_bytes((40, 120)), mode)
    with pytest.raises(AssetError, match=reason) as err:
        ensure(embeddings_asset(url), tmp_path, retries=2, retry_delay=0)
    assert "test-emb" in str(err.value) and url in str(err.value) and "Nothing was written" in str(err.value)
    assert list((tmp_path / "embeddings").iterdir()) == []
    assert len(server.log) == (1 if mode == "html" else 2)


def test_failed_structural_check_leaves_nothing(server, tmp_path):
    url = serve(server, "/z.npy", npy_bytes((3, 7)))
    with pytest.raises(AssetError, match=r"test-emb.*\n.*/z.npy: structural check failed.*\[N, 120\].*\(3, 7\)"):
        ensure(embeddings_asset(url), tmp_path, retries=1)
    assert list((tmp_path / "embeddings").iterdir()) == []


def test_known_sha256_is_enforced(server, tmp_path):
    body = npy_bytes((3, 120))
    url = serve(server, "/z.npy", body)
    with pytest.raises(AssetError, match="sha256 mismatch: got .* expected 0000"):
        ensure(embeddings_asset(url, sha256="0" * 64), tmp_path, retries=1)
    assert list((tmp_path / "embeddings").iterdir()) == []
    good = embeddings_asset(url, sha256=hashlib.sha256(body).hexdigest())
    assert ensure(good, tmp_path, retries=1) == "downloaded"
    assert assets.read_lock(tmp_path / "embeddings")["test_z.npy"]["check"] == "sha256"
    assert ensure(good, tmp_path) == "verified"  # a published sha256 matched


def test_mirror_fallback(server, tmp_path):
    good = serve(server, "/good.npy", npy_bytes((3, 120)))
    missing = server.url + "/missing.npy"
    assert ensure(embeddings_asset(missing, good), tmp_path, retries=3, retry_delay=0) == "downloaded"
    assert [p for p, _ in server.log] == ["/missing.npy", "/good.npy"]  # a 404 is not retried
    assert assets.read_lock(tmp_path / "embeddings")["test_z.npy"]["url"] == good


def test_bad_file_in_place_is_reported_not_overwritten(server, tmp_path):
    url = serve(server, "/z.npy", npy_bytes((3, 120)))
    target = tmp_path / "embeddings" / "test_z.npy"
    target.parent.mkdir()
    target.write_bytes(b"not an array")
    with pytest.raises(AssetError, match=r"test-emb: .*test_z.npy is in place but fails verification.*--force"):
        ensure(embeddings_asset(url), tmp_path)
    assert target.read_bytes() == b"not an array" and server.log == []
    assert ensure(embeddings_asset(url), tmp_path, force=True, retries=1) == "downloaded"
    target.write_bytes(npy_bytes((4, 120)))  # a valid array, but not the recorded file
    with pytest.raises(AssetError, match="differs from its expected sha256"):
        ensure(embeddings_asset(url), tmp_path)


def test_cli_list_only_and_exit_status(server, tmp_path, monkeypatch, capsys):
    url = serve(server, "/z.npy", npy_bytes((3, 120)))
    manual = manual_asset("test-manual", "m.pth", "place it")
    monkeypatch.setattr(assets, "ASSETS", (embeddings_asset(url), manual))
    assert main(["--list", "--dest", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "test-emb" in out and "test_z.npy" in out and "~0.01 MB" in out and "missing" in out
    assert str(tmp_path / "embeddings" / "test_z.npy") in out and "manual: place it" in out
    assert main(["--only", "test-emb", "--dest", str(tmp_path)]) == 0
    assert "test-emb: downloaded" in capsys.readouterr().out
    main(["--list", "--dest", str(tmp_path)])
    lines = capsys.readouterr().out.splitlines()
    assert "unverified: structure only" in lines[0] and "missing" in lines[1]
    assert main(["--dest", str(tmp_path)]) == 0  # a missing manual asset alone is not a failure
    assert main(["--only", "test-manual", "--dest", str(tmp_path)]) == 1
    assert "manual step: place it" in capsys.readouterr().out
    del server.files["/z.npy"]  # now a 404
    assert main(["--only", "test-emb", "--force", "--dest", str(tmp_path)]) == 1
    assert "ERROR test-emb" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--only", "no-such-asset"])


def test_structural_checks(tmp_path):
    def saved(obj, name):
        torch.save(obj, tmp_path / name)
        return tmp_path / name

    unet = {k: torch.zeros(1) for k in assets.UNET_KEYS}
    unet |= {"inc.double_conv.0.weight": torch.zeros(64, 3, 3, 3), "outc.conv.weight": torch.zeros(2, 64, 1, 1)}
    assert "128 keys" in check_unet(saved(unet, "unet.pth"))
    with pytest.raises(ValueError, match="missing.*outc.conv.bias"):
        check_unet(saved({k: v for k, v in unet.items() if k != "outc.conv.bias"}, "unet_bad.pth"))
    assert check_direction(saved({"direction": torch.randn(1, 120)}, "d.pth")) == "direction tensor (1, 120)"
    with pytest.raises(ValueError, match="120 finite numbers, got tensor \\(119,\\)"):
        check_direction(saved(torch.randn(119), "d_bad.pth"))
    small = BigGAN(resolution=32, ch=2, dim_z=16, shared_dim=4, n_classes=1, attention=[16])
    with pytest.raises(ValueError, match="expected BigGAN resolution 128, ch 96, dim_z 120; got .*'resolution': 32"):
        check_bigbigan(saved(small.state_dict(), "g.pth"))
    gan = StyleGAN2(32, dim_z=16, n_mlp=2, fmap_base=64, fmap_max=16)
    gan.latent_avg.zero_()
    path = saved(gan.saic_checkpoint(), "s.tar")
    assert assets.stylegan2_check(32)(path).startswith("SAIC StyleGAN2 32 px, ")
    assert "32 px, not the released 1024 px" in assets.stylegan2_check(1024)(path)  # a user's own, reported
    with pytest.raises(ValueError, match="'netGA' and 'latent_avg'"):
        assets.stylegan2_check(32)(saved({"netGA": gan.state_dict()}, "s_bad.tar"))


def test_real_registry_is_well_formed():
    names = [a.name for a in assets.ASSETS]
    assert len(set(names)) == len(names)
    assert len({(a.folder, a.filename) for a in assets.ASSETS}) == len(names)
    for a in assets.ASSETS:
        assert a.folder in assets.FOLDERS and a.source.startswith("https://github.com/") and a.description
        assert a.urls or "drive.google.com" in a.manual, a.name
        assert all(u.startswith("https://") and "drive.google" not in u for u in a.urls), a.name
        assert a.sha256 is None or len(a.sha256) == 64
        assert (a.folder == "embeddings") == (a.check is check_embeddings) == a.filename.endswith(".npy")
    for name, filename in KNOWN_FILES.items():
        matches = [a for a in assets.ASSETS if a.name == name or a.filename == filename]
        assert all((a.name, a.filename) == (name, filename) for a in matches), matches
    assert {"bigbigan", "bg-direction", "stylegan2-ffhq", "stylegan2-cars"} <= set(names)
    assert sum(a.folder == "embeddings" for a in assets.ASSETS) == 4


def test_the_scripts_import_the_helpers_of_their_own_checkout(tmp_path):
    """A second checkout run with an environment installed from another one (a shared GANSEG_VENV or an active conda
    env) imports its own helpers, in the scripts' processes and whatever they start."""
    checkout = tmp_path / "other"
    shutil.copytree(ROOT / "scripts", checkout / "scripts")
    (checkout / "helpers").mkdir()
    (checkout / "helpers" / "__init__.py").write_text("")
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"  # `python` is this interpreter
    env = {**os.environ, "GANSEG_USE_ACTIVE_ENV": "1", "PATH": path}
    script = f'source "{checkout}/scripts/ensure_env.sh" && "$PY" -c "import helpers; print(helpers.__file__)"'
    # run from elsewhere, as a notebook kernel runs from its own folder
    run = subprocess.run(["bash", "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert Path(run.stdout.strip()) == checkout / "helpers" / "__init__.py"


def test_download_all_sh_lists_the_registry(tmp_path):
    assert os.access(ROOT / "download_all.sh", os.X_OK)
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"  # `python` is this interpreter
    env = {**os.environ, "GANSEG_USE_ACTIVE_ENV": "1", "PATH": path}
    run = subprocess.run(
        ["bash", str(ROOT / "download_all.sh"), "--list", "--dest", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert "BigBiGAN_x1.pth" in run.stdout and "BigBiGAN_ImageNet_z.npy" in run.stdout and "~551 MB" in run.stdout
    assert run.stdout.count("missing") == len(assets.ASSETS)
