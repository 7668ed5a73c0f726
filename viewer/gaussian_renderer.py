"""Interactive Gaussian rendering for viser clients.

``GaussianRenderer`` turns a camera into a displayable image (rgb, colourised depth, or alpha)
with ``studio.render.rasterize``. ``ClientRenderLoop`` is one daemon thread per client that keeps
the client's scene background up to date: camera messages only record the newest camera, so
requests that arrive while a render runs are dropped except the last one. While the camera moves
the loop renders at a reduced size chosen from the measured cost per pixel to stay near
``PREVIEW_BUDGET_S`` per frame; once the camera has been still for ``SETTLE_S`` it renders once
at the full resolution.

Under load (``benchmarks/viewer_load.py``: 20 clients orbiting at once on 2 CPU cores) the loops
take turns on the renderer first come, first served (``FairLock``): each client waits for at most
one render of every other client, and as the measured cost includes that wait, previews shrink
as clients are added. Each loop is one thread (plus the rasterizer's worker threads); it ends
when its client disconnects, and the server joins the loops before it exits.
"""

from __future__ import annotations

import math
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from studio.gaussians import Gaussians
from studio.render import rasterize
from studio.viewer.camera import MIN_SIDE, image_size, viser_to_opencv

RENDER_MODES = ("rgb", "depth", "alpha")
SETTLE_S = 0.25
PREVIEW_BUDGET_S = 0.1
_FIRST_PREVIEW_SIDE = 128
_COST_SMOOTHING = 0.3

# Anchor colours of the "turbo" colour map (near = dark blue ... far = dark red).
_TURBO = np.array(
    [
        [0.19, 0.07, 0.23],
        [0.27, 0.38, 0.82],
        [0.16, 0.68, 0.93],
        [0.10, 0.90, 0.63],
        [0.55, 0.99, 0.24],
        [0.90, 0.87, 0.20],
        [0.99, 0.57, 0.16],
        [0.86, 0.24, 0.04],
        [0.48, 0.02, 0.01],
    ]
)


@dataclass
class ViewSettings:
    """GUI state shared by all clients: written by GUI callbacks, read by the render loops."""

    mode: str = "rgb"
    max_resolution: int = 512


@dataclass
class RenderStats:
    """What one finished render took."""

    seconds: float
    width: int
    height: int
    full: bool


@dataclass
class CameraSnapshot:
    """A viser client camera at one moment (see ``studio.viewer.camera``)."""

    wxyz: np.ndarray
    position: np.ndarray
    fov_y: float
    aspect: float


def colorize_depth(depth: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Depth [H,W] -> turbo colours [H,W,3] over the 1st-99th percentile of covered pixels, times alpha."""
    covered = alpha > 0.5
    if not covered.any():
        return np.zeros(depth.shape + (3,))
    near, far = np.percentile(depth[covered], [1.0, 99.0])
    t = np.clip((depth - near) / max(far - near, 1e-8), 0.0, 1.0) * (len(_TURBO) - 1)
    grid = np.arange(len(_TURBO))
    rgb = np.stack([np.interp(t, grid, _TURBO[:, c]) for c in range(3)], axis=-1)
    return rgb * alpha[..., None]


class FairLock:
    """A lock granted in the order it was asked for (a ticket lock), for the render loops' turns.

    ``threading.Lock`` wakes its waiters in no particular order, so with 20 clients some render
    loops waited many renders while others rendered again at once (frames per client 21-32 in a
    30 s load run). With tickets each waiter is served after those that asked before it.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._next_ticket = 0
        self._serving = 0  # the ticket that holds the lock

    def __enter__(self) -> None:
        with self._cond:
            ticket = self._next_ticket
            self._next_ticket += 1
            self._cond.wait_for(lambda: self._serving == ticket)

    def __exit__(self, *exc) -> None:
        with self._cond:
            self._serving += 1
            self._cond.notify_all()


class GaussianRenderer:
    """Renders one Gaussian scene into single cameras as uint8 RGB images [H,W,3]."""

    def __init__(self, gaussians: Gaussians, backend: str = "auto", background: Sequence[float] = (0.0, 0.0, 0.0)):
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.gaussians = gaussians.detach().to(device)
        self.backend = backend
        self.background = torch.tensor(background, dtype=torch.float32, device=device)
        self._lock = threading.Lock()  # renders share the CPU cores (or the GPU): one at a time

    def render(self, viewmat: np.ndarray, K: np.ndarray, width: int, height: int, mode: str = "rgb") -> np.ndarray:
        """Image of the scene seen by (viewmat [4,4], K [3,3]) in ``mode`` (one of ``RENDER_MODES``)."""
        g = self.gaussians
        vm = torch.as_tensor(viewmat, dtype=torch.float32, device=g.means.device)[None]
        Ks = torch.as_tensor(K, dtype=torch.float32, device=g.means.device)[None]
        with self._lock, torch.no_grad():
            out = rasterize(
                g.means,
                g.quats,
                g.scales,
                g.opacities,
                g.sh,
                vm,
                Ks,
                width,
                height,
                background=self.background,
                backend=self.backend,
                sh_degree=g.sh_degree,
            )
        alpha = out.alpha[0, ..., 0].cpu().numpy()
        if mode == "rgb":
            image = out.color[0].cpu().numpy()
        elif mode == "depth":
            image = colorize_depth(out.depth[0, ..., 0].cpu().numpy(), alpha)
        elif mode == "alpha":
            image = np.repeat(alpha[..., None], 3, axis=-1)
        else:
            raise ValueError(f"Unknown render mode {mode!r}; choose one of {RENDER_MODES}.")
        return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


class ClientRenderLoop:
    """Keeps one viser client's background image rendered from its current camera (module docstring)."""

    def __init__(
        self,
        client,
        renderer: GaussianRenderer,
        settings: ViewSettings,
        on_render: Callable[[RenderStats], None],
        turns: Optional[FairLock] = None,
    ):
        """``turns``: shared by the loops of one server so that their renders take turns (module docstring)."""
        self._client = client
        self._turns = turns if turns is not None else FairLock()
        self._renderer = renderer
        self._settings = settings
        self._on_render = on_render
        self._cond = threading.Condition()
        self._camera: Optional[CameraSnapshot] = None
        self._pending = False  # a camera or settings change not rendered yet
        self._needs_full = False  # the last image was a preview
        self._last_move = -math.inf
        self._closed = False
        self._sec_per_pixel: Optional[float] = None
        self._thread = threading.Thread(target=self._run, name=f"render-client-{client.client_id}", daemon=True)
        self._thread.start()

    def camera_moved(self, camera) -> None:
        """Record the newest camera of a viser ``CameraHandle``; renders follow asynchronously."""
        snapshot = CameraSnapshot(
            np.array(camera.wxyz), np.array(camera.position), float(camera.fov), float(camera.aspect)
        )
        with self._cond:
            self._camera = snapshot
            self._last_move = time.monotonic()
            self._pending = True
            self._cond.notify()

    def refresh(self) -> None:
        """Render again at full resolution (settings changed)."""
        with self._cond:
            self._pending = True
            self._cond.notify()

    def close(self) -> None:
        """Stop the thread after the render in progress, if any (a loop waiting for its turn skips its render)."""
        with self._cond:
            self._closed = True
            self._cond.notify()

    def join(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the thread to end (after ``close``).

        A server must not exit while a loop is inside the rasterizer: tearing down the extension's
        worker threads under a running render aborted the process (exit status -6, not 130).
        """
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                full = self._wait_for_work()
                if full is None:
                    return
                camera = self._camera
                self._pending = False
                self._needs_full = not full
            try:
                self._render(camera, full)
            except Exception:  # keep serving the client; the traceback says what went wrong
                traceback.print_exc()

    def _wait_for_work(self) -> Optional[bool]:
        """Block until a render is due (holding ``_cond``): True full size, False preview, None closed."""
        while not self._closed:
            settle_left = self._last_move + SETTLE_S - time.monotonic()
            if self._camera is not None and self._pending:
                return settle_left <= 0.0
            if self._needs_full and settle_left <= 0.0:
                return True
            self._cond.wait(timeout=settle_left if self._needs_full else None)
        return None

    def _render(self, camera: CameraSnapshot, full: bool) -> None:
        long_side = self._settings.max_resolution if full else self._preview_side(camera.aspect)
        width, height = image_size(camera.aspect, long_side)
        viewmat, K = viser_to_opencv(camera.wxyz, camera.position, camera.fov_y, width, height)
        start = time.perf_counter()  # the cost includes waiting for the turn (module docstring)
        with self._turns:
            if self._closed:
                return
            image = self._renderer.render(viewmat, K, width, height, self._settings.mode)
        seconds = time.perf_counter() - start
        cost = seconds / (width * height)
        self._sec_per_pixel = (
            cost
            if self._sec_per_pixel is None
            else ((1.0 - _COST_SMOOTHING) * self._sec_per_pixel + _COST_SMOOTHING * cost)
        )
        self._client.scene.set_background_image(image, format="jpeg", jpeg_quality=90 if full else 70)
        self._on_render(RenderStats(seconds, width, height, full))

    def _preview_side(self, aspect: float) -> int:
        """Longest image side that should render in about ``PREVIEW_BUDGET_S`` (capped by the settings)."""
        cap = self._settings.max_resolution
        if self._sec_per_pixel is None:
            return min(_FIRST_PREVIEW_SIDE, cap)
        pixels = PREVIEW_BUDGET_S / self._sec_per_pixel
        long_side = math.sqrt(pixels * max(aspect, 1.0 / aspect))
        return int(min(max(long_side, MIN_SIDE), cap))
