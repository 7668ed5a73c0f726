"""The ``studio view`` server: viser first, the scene after.

``run_viewer`` starts the viser server (the page answers within about a second), shows a
"loading" status, and only then imports torch and reads the scene, so a slow load (a run's
config.yml imports Nerfstudio) never delays the page. Gaussians are rendered per client by
``ClientRenderLoop`` threads and shown as the scene background; meshes are sent to the browser
as glTF and drawn by viser itself. New clients get a camera that frames the scene. The server
runs in the foreground until Ctrl-C.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    import viser

    from studio.gaussians import Gaussians

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7070  # not Nerfstudio's 7007, so `studio view` runs beside a training viewer
DEFAULT_MAX_RESOLUTION = 512
RESOLUTION_RANGE = (64, 2048)  # of the "Max resolution" slider


def run_viewer(
    path: Path,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    max_resolution: int = DEFAULT_MAX_RESOLUTION,
    up: Sequence[float] = (0.0, 0.0, 1.0),
    backend: str = "auto",
) -> None:
    """Serve ``path`` (Gaussian PLY, mesh, or config.yml) at http://host:port until Ctrl-C.

    viser moves to the next free port when ``port`` is taken; the address printed is the real one.
    """
    import viser

    server = viser.ViserServer(host=host, port=port, label="Distill Studio", verbose=False)
    try:
        print(f"studio view: http://{host}:{server.get_port()} (Ctrl-C to stop)", flush=True)
        server.scene.set_up_direction(tuple(up))
        status = server.gui.add_markdown(f"**{path.name}**: loading ...")

        import trimesh

        from studio.render.turntable import scene_bounds
        from studio.io.scene import load_scene

        scene = load_scene(path)
        center, radius = scene_bounds(scene)
        server.on_client_connect(lambda client: _frame_scene(client, center, radius, up))
        if isinstance(scene, trimesh.Trimesh):
            status.content = f"**{path.name}**: mesh, {len(scene.vertices):,} vertices, {len(scene.faces):,} faces"
            server.scene.add_mesh_trimesh("/mesh", scene)
            stop_rendering = _nothing_to_stop
        else:
            status.content = f"**{path.name}**: {len(scene):,} Gaussians, SH degree {scene.sh_degree}"
            stop_rendering = _serve_gaussians(server, scene, max_resolution, backend)
        print("studio view: scene loaded.", flush=True)
        try:
            while True:
                time.sleep(1.0)
        finally:
            stop_rendering()
    finally:
        server.stop()


def _serve_gaussians(server: "viser.ViserServer", gaussians: "Gaussians", max_resolution: int, backend: str):
    """GUI controls and one render loop per client for a Gaussian scene; returns a function that stops them."""
    from studio.viewer.gaussian_renderer import (
        RENDER_MODES,
        ClientRenderLoop,
        GaussianRenderer,
        RenderStats,
        ViewSettings,
    )

    renderer = GaussianRenderer(gaussians, backend=backend)
    settings = ViewSettings(max_resolution=max_resolution)
    loops: dict[int, ClientRenderLoop] = {}

    mode = server.gui.add_dropdown("Render mode", RENDER_MODES, initial_value=settings.mode)
    resolution = server.gui.add_slider(
        "Max resolution", min=RESOLUTION_RANGE[0], max=RESOLUTION_RANGE[1], step=32, initial_value=max_resolution,
        hint="Longest image side when the camera is still; moving views render smaller.",
    )
    readout = server.gui.add_text("Render", initial_value="waiting for a client", disabled=True)

    def refresh_all() -> None:
        for loop in list(loops.values()):
            loop.refresh()

    @mode.on_update
    def _(_) -> None:
        settings.mode = mode.value
        refresh_all()

    @resolution.on_update
    def _(_) -> None:
        settings.max_resolution = int(resolution.value)
        refresh_all()

    def show_stats(stats: RenderStats) -> None:
        kind = "full" if stats.full else "preview"
        readout.value = f"{stats.seconds * 1e3:.0f} ms ({1.0 / stats.seconds:.1f} fps), {stats.width}x{stats.height} {kind}"

    @server.on_client_connect
    def _(client: "viser.ClientHandle") -> None:
        loop = ClientRenderLoop(client, renderer, settings, show_stats)
        loops[client.client_id] = loop
        client.camera.on_update(loop.camera_moved)
        loop.camera_moved(client.camera)

    @server.on_client_disconnect
    def _(client: "viser.ClientHandle") -> None:
        loop = loops.pop(client.client_id, None)
        if loop is not None:
            loop.close()

    def stop_all() -> None:
        for loop in list(loops.values()):
            loop.close()

    return stop_all


def _frame_scene(client: "viser.ClientHandle", center, radius: float, up: Sequence[float]) -> None:
    """Point a newly connected client's camera at the scene from a distance that fits its bounds."""
    from studio.render.turntable import fit_distance
    from studio.viewer.camera import initial_eye

    fov_y = client.camera.fov
    fov_x = 2.0 * math.atan(math.tan(fov_y / 2.0) * client.camera.aspect)
    distance = fit_distance(radius, math.degrees(min(fov_x, fov_y)))
    with client.atomic():
        client.camera.position = initial_eye(center, distance, up)
        client.camera.look_at = center
        client.camera.up_direction = tuple(up)


def _nothing_to_stop() -> None:
    """Meshes are drawn by the browser: no render loops to stop."""
