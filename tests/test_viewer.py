"""``studio view``: the server answers fast on 127.0.0.1 only, and a real browser shows the render.

The browser test drives Debian's headless Chromium through the DevTools protocol (a websocket),
because ``chromium --screenshot`` does not wait for viser's websocket scene.
"""

from __future__ import annotations

import base64
import io
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
import trimesh
from conftest import free_port, studio_process

from studio.cameras import look_at
from studio.export import save_gaussians_ply
from studio.gaussians import Gaussians, rgb_to_sh
from studio.viewer.camera import image_size, viser_to_opencv
from studio.viewer.devtools import CHROMIUM, DevTools, headless_chromium, wait_http
from studio.viewer.gaussian_renderer import ClientRenderLoop, ViewSettings

# The reference backend: the viewer's behaviour does not depend on the backend, and `auto` (the C++
# "studio" backend on CPU) may start a 1-2 minute first-use compile inside the subprocess.
BACKEND = "torch"
MAGENTA = (1.0, 0.0, 1.0)  # a colour viser's own interface does not use


@pytest.fixture(scope="module")
def gaussian_ply(tmp_path_factory) -> Path:
    """A few large magenta Gaussians around the origin, saved as a 3DGS PLY."""
    gen = torch.Generator().manual_seed(0)
    n = 40
    means = torch.randn(n, 3, generator=gen) * 0.4
    rgb = torch.tensor(MAGENTA).expand(n, 3)
    gaussians = Gaussians(
        means,
        torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(n, 1),
        torch.full((n, 3), 0.15),
        torch.full((n,), 0.9),
        rgb_to_sh(rgb)[:, None, :],
    )
    path = tmp_path_factory.mktemp("view") / "scene.ply"
    save_gaussians_ply(path, gaussians)
    return path


@pytest.fixture(scope="module")
def mesh_glb(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("view") / "torus.glb"
    trimesh.creation.torus(1.0, 0.3).export(path)
    return path


def _viewer(path: Path, port: int, *extra: str):
    """Run ``studio view`` in a subprocess; yields (process, stdout lines so far); stops it with Ctrl-C."""
    return studio_process("view", str(path), "--port", str(port), "--backend", BACKEND, *extra)


def _wait_for_line(lines: list[str], text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(text in line for line in lines):
            return
        time.sleep(0.1)
    raise AssertionError(f"no {text!r} in the output within {timeout} s:\n{''.join(lines)}")


def _non_loopback_ipv4() -> str | None:
    for addrs in psutil.net_if_addrs().values():
        for addr in addrs:
            if addr.family == socket.AF_INET and not addr.address.startswith("127."):
                return addr.address
    return None


@pytest.mark.parametrize("scene", ["gaussian_ply", "mesh_glb"])
def test_view_serves_page_on_loopback_only(scene, request):
    path = request.getfixturevalue(scene)
    port = free_port()
    start = time.monotonic()
    with _viewer(path, port) as (proc, lines):
        assert wait_http(f"http://127.0.0.1:{port}/", proc, timeout=10.0) == 200
        assert time.monotonic() - start < 10.0
        listening = [
            c.laddr for c in psutil.Process(proc.pid).net_connections(kind="inet") if c.status == psutil.CONN_LISTEN
        ]
        assert listening and all(addr.ip == "127.0.0.1" and addr.port == port for addr in listening)
        other = _non_loopback_ipv4()
        if other is not None:
            with pytest.raises(OSError), socket.create_connection((other, port), timeout=1.0):
                pass
        _wait_for_line(lines, "scene loaded", timeout=30.0)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 130  # Ctrl-C ends the foreground server


def test_view_missing_file_is_input_error(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "studio.cli.main", "view", str(tmp_path / "nope.ply")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "does not exist" in result.stderr


def test_viser_camera_conversion_matches_look_at():
    from viser import transforms as vtf

    eye, target, up = torch.tensor([2.0, -1.0, 1.5]), torch.tensor([0.1, 0.2, 0.3]), torch.tensor([0.0, 0.0, 1.0])
    expected = look_at(eye, target, up).double().numpy()
    wxyz = vtf.SO3.from_matrix(expected[:3, :3].T).wxyz  # viser reports R_world_camera
    viewmat, K = viser_to_opencv(wxyz, eye.numpy(), fov_y=np.deg2rad(50.0), width=320, height=240)
    np.testing.assert_allclose(viewmat, expected, atol=1e-6)
    np.testing.assert_allclose(K[1, 1], 120.0 / np.tan(np.deg2rad(25.0)))
    assert (K[0, 2], K[1, 2]) == (160.0, 120.0)
    assert image_size(16 / 9, 512) == (512, 288)
    assert image_size(0.5, 512) == (256, 512)


class _FakeCamera:
    wxyz = np.array([1.0, 0.0, 0.0, 0.0])
    position = np.array([0.0, 0.0, -3.0])
    fov = 1.0
    aspect = 1.5


class _FakeScene:
    def __init__(self):
        self.images: list[np.ndarray] = []

    def set_background_image(self, image, format, jpeg_quality):
        self.images.append(image)


class _FakeClient:
    client_id = 0

    def __init__(self):
        self.scene = _FakeScene()


class _SlowRenderer:
    """Stands in for GaussianRenderer: 30 ms per frame, whatever the size."""

    def render(self, viewmat, K, width, height, mode):
        time.sleep(0.03)
        return np.zeros((height, width, 3), np.uint8)


def test_render_loop_drops_stale_cameras_and_refines_when_still():
    client, stats = _FakeClient(), []
    loop = ClientRenderLoop(client, _SlowRenderer(), ViewSettings(max_resolution=256), stats.append)
    try:
        for _ in range(30):  # a drag: 30 camera messages in about 0.3 s
            loop.camera_moved(_FakeCamera())
            time.sleep(0.01)
        deadline = time.monotonic() + 5.0
        while not (stats and stats[-1].full):
            assert time.monotonic() < deadline, "no full-resolution render after the camera stopped"
            time.sleep(0.02)
    finally:
        loop.close()
    assert len(stats) < 30  # requests that arrived during a render were dropped
    assert any(not s.full for s in stats)  # previews while moving ...
    assert max(stats[0].width, stats[0].height) < 256
    last = stats[-1]  # ... then one full-size frame with the canvas aspect
    assert (last.width, last.height) == (256, 171)
    assert client.scene.images[-1].shape == (171, 256, 3)


def _screenshot(devtools: DevTools) -> np.ndarray:
    import imageio.v3 as iio

    data = base64.b64decode(devtools.call("Page.captureScreenshot", format="png")["data"])
    return iio.imread(io.BytesIO(data))[..., :3]


def _magenta_pixels(image: np.ndarray) -> int:
    r, g, b = (image[..., c].astype(int) for c in range(3))
    return int(((r > 150) & (b > 150) & (g < 90)).sum())


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")
def test_browser_shows_rendered_gaussians(gaussian_ply, tmp_path):
    import imageio.v3 as iio

    port = free_port()
    with _viewer(gaussian_ply, port, "--max-resolution", "256") as (proc, lines), headless_chromium() as devtools:
        wait_http(f"http://127.0.0.1:{port}/", proc, timeout=10.0)
        devtools.navigate(f"http://127.0.0.1:{port}/")
        deadline = time.monotonic() + 45.0
        while True:
            image = _screenshot(devtools)
            iio.imwrite(tmp_path / "viewer.png", image)  # the last screenshot, for a look by eye
            text = devtools.call("Runtime.evaluate", expression="document.body.innerText")["result"].get("value", "")
            if "Gaussians" in text and _magenta_pixels(image) > 2000:
                break
            assert time.monotonic() < deadline, f"no rendered background in the page; viewer output:\n{''.join(lines)}"
            time.sleep(1.0)
    assert image.std() > 20.0
    assert "40 Gaussians" in text
