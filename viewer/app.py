"""The ``studio view`` server: viser first, the scene after.

``run_viewer`` starts the viser server (the page answers within about a second), shows a
"loading" status, and only then imports torch and reads the scene, so a slow load (a run's
config.yml imports Nerfstudio) never delays the page. Gaussians are rendered per client by
``ClientRenderLoop`` threads and shown as the scene background; meshes are sent to the browser
as glTF and drawn by viser itself. A ``prd`` run's config.yml is rendered by
``studio.viewer.prd_renderer`` (a channel dropdown and environment-map controls). A ``splat-distill``
run's config.yml shows one scene of the run's data as its model lifts it (``studio.viewer.feature_renderer``:
the predicted pixel-aligned Gaussians with the teacher's features in PCA colours, or their rgb, and a
scene and context-pair choice). New clients get a camera that frames the scene. The server runs in
the foreground until Ctrl-C.
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
READOUT_PERIOD_S = 0.5  # the "Render" readout changes at most this often, seconds
STOP_TIMEOUT_S = 10.0  # how long stopping waits for the render loops, seconds


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
        if _is_splat_distill_run(path):
            status.content = f"**{path.name}**: splat-distill run, loading the model and its scenes ..."
            stop_rendering = _serve_splat_distill(server, path, max_resolution, up, status)
        else:
            stop_rendering = _serve_scene(server, path, max_resolution, up, backend, status)
        print("studio view: scene loaded.", flush=True)
        try:
            while True:
                time.sleep(1.0)
        finally:
            stop_rendering()
    finally:
        server.stop()


def _serve_scene(
    server: "viser.ViserServer", path: Path, max_resolution: int, up: Sequence[float], backend: str, status
):
    """A Gaussian PLY, a mesh or a Gaussian run's config.yml (a prd run with its channels); returns
    a function that stops the render loops."""
    import trimesh

    from studio.export.scene import load_scene
    from studio.render.turntable import scene_bounds

    scene = load_scene(path)
    center, radius = scene_bounds(scene)
    server.on_client_connect(lambda client: _frame_scene(client, center, radius, up))
    if isinstance(scene, trimesh.Trimesh):
        status.content = f"**{path.name}**: mesh, {len(scene.vertices):,} vertices, {len(scene.faces):,} faces"
        server.scene.add_mesh_trimesh("/mesh", scene)
        return _nothing_to_stop
    if _is_prd_run(path):
        status.content = f"**{path.name}**: prd run, {len(scene):,} Gaussians, loading the model ..."
        stop_rendering = _serve_prd(server, path, max_resolution, backend)
        status.content = f"**{path.name}**: prd run, {len(scene):,} Gaussians, SH degree {scene.sh_degree}"
        return stop_rendering
    status.content = f"**{path.name}**: {len(scene):,} Gaussians, SH degree {scene.sh_degree}"
    return _serve_gaussians(server, scene, max_resolution, backend)


def _serve_gaussians(server: "viser.ViserServer", gaussians: "Gaussians", max_resolution: int, backend: str):
    """GUI controls and one render loop per client for a Gaussian scene; returns a function that stops them."""
    from studio.viewer.gaussian_renderer import RENDER_MODES, GaussianRenderer

    renderer = GaussianRenderer(gaussians, backend=backend)
    stop_all, _ = _serve_renderer(server, renderer, RENDER_MODES, max_resolution)
    return stop_all


def _is_prd_run(path: Path) -> bool:
    """Whether ``path`` is the config.yml of a ``prd`` run (method_name, read by the restricted loader)."""
    from studio.viewer.prd_renderer import is_prd_config

    return is_prd_config(path)


def _serve_prd(server: "viser.ViserServer", path: Path, max_resolution: int, backend: str):
    """A prd run: the channel dropdown, environment-map controls and per-client render loops.

    The channels and the environment handling are in ``studio.viewer.prd_renderer``; the map is
    "learned" (the run's light), one of the dataset's / Blender's maps, or a typed .exr/.hdr
    path, rotated about +Z by the slider. Returns a function that stops the render loops.
    """
    from studio.viewer.prd_renderer import LEARNED_ENV, PRD_CHANNELS, PRDRenderer

    renderer = PRDRenderer.from_config(path, backend=backend)
    stop_all, refresh_all = _serve_renderer(server, renderer, PRD_CHANNELS, max_resolution, mode_label="Channel")
    choices = {LEARNED_ENV: LEARNED_ENV, **{label: str(file) for label, file in renderer.envmaps.items()}}
    env = server.gui.add_dropdown(
        "Environment",
        tuple(choices),
        initial_value=LEARNED_ENV,
        hint="Light of the PBR shading: the learned one or an environment map.",
    )
    env_path = server.gui.add_text(
        "Env map path", initial_value="", hint="An .exr/.hdr file (Enter to apply); empty: the dropdown's."
    )
    rotation = server.gui.add_slider(
        "Env rotation (deg)",
        min=-180.0,
        max=180.0,
        step=1.0,
        initial_value=0.0,
        hint="Rotates the environment about the world up axis (+Z), counter-clockwise seen from +Z.",
    )
    env_status = server.gui.add_text("Env", initial_value=LEARNED_ENV, disabled=True)

    def apply(env_name: str | None = None) -> None:
        target = env_name if env_name is not None else renderer.env
        try:
            renderer.set_environment(target, float(rotation.value))
        except Exception as err:  # noqa: BLE001 - unreadable file: keep the previous light, say why
            env_status.value = f"cannot use {target}: {err}"
            return
        env_status.value = (
            f"{'learned' if renderer.env == LEARNED_ENV else Path(renderer.env).name}, {renderer.rotation_deg:+.0f} deg"
        )
        refresh_all()

    @env.on_update
    def _(_) -> None:
        apply(choices[env.value])

    @env_path.on_update
    def _(_) -> None:
        text = env_path.value.strip()
        apply(text if text else choices[env.value])

    @rotation.on_update
    def _(_) -> None:
        apply()

    return stop_all


def _is_splat_distill_run(path: Path) -> bool:
    """Whether ``path`` is the config.yml of a ``splat-distill`` run (method_name, read by the restricted loader)."""
    from studio.viewer.feature_renderer import is_splat_distill_config

    return is_splat_distill_config(path)


def _serve_splat_distill(server: "viser.ViserServer", path: Path, max_resolution: int, up: Sequence[float], status):
    """A splat-distill run: the lifted Gaussians of one scene of its data (``studio.viewer.feature_renderer``).

    Controls: the render mode ("features (PCA)" first, the default, or "rgb"), the scene (a dropdown of
    the data manager's scenes) and the context pair (a seed; each value draws another pair of context
    views of the scene). New clients are framed on the first scene. Returns a function that stops the
    render loops.
    """
    from studio.viewer.feature_renderer import FEATURE_MODES, FeatureRenderer

    renderer = FeatureRenderer.from_config(path)
    center, radius = renderer.bounds()
    server.on_client_connect(lambda client: _frame_scene(client, center, radius, up))
    stop_all, refresh_all = _serve_renderer(server, renderer, FEATURE_MODES, max_resolution)
    names = renderer.scene_names()
    scene = server.gui.add_dropdown(
        "Scene", tuple(names), initial_value=names[renderer.scene_index], hint="Scene of the run's data to lift."
    )
    seed = server.gui.add_number(
        "Context pair",
        initial_value=renderer.context_seed,
        min=0,
        step=1,
        hint="Seed of the two context views drawn from the scene (as the run's eval images are).",
    )

    def describe() -> None:
        status.content = (
            f"**{path.name}**: splat-distill run, scene {names[renderer.scene_index]} (context pair "
            f"{renderer.context_seed}), {renderer.num_gaussians:,} Gaussians (PCA of their lifted features)"
        )

    def apply() -> None:
        try:
            renderer.set_scene(names.index(scene.value), int(seed.value))
        except Exception as err:  # noqa: BLE001 - keep showing the previous scene, say why
            status.content = f"**{path.name}**: cannot lift {scene.value} (context pair {seed.value}): {err}"
            return
        describe()
        refresh_all()

    @scene.on_update
    def _(_) -> None:
        apply()

    @seed.on_update
    def _(_) -> None:
        apply()

    describe()
    return stop_all


def _serve_renderer(server: "viser.ViserServer", renderer, modes, max_resolution: int, mode_label: str = "Render mode"):
    """Mode and resolution controls plus one render loop per client for ``renderer``.

    The first of ``modes`` is the initial one. The loops take turns on the renderer (``FairLock``).
    The "Render" readout is shared by all clients, and each change is sent to every client: it
    shows a full-size render at once and a preview at most every ``READOUT_PERIOD_S``, so that 20
    moving clients do not send 20 x 20 readout messages per render round. Returns (stop and join all loops, refresh all loops).
    """
    from studio.viewer.gaussian_renderer import ClientRenderLoop, FairLock, RenderStats, ViewSettings

    settings = ViewSettings(mode=modes[0], max_resolution=max_resolution)
    loops: dict[int, ClientRenderLoop] = {}
    turns = FairLock()
    readout_shown = -math.inf  # time.monotonic() of the last readout change

    mode = server.gui.add_dropdown(mode_label, tuple(modes), initial_value=settings.mode)
    resolution = server.gui.add_slider(
        "Max resolution",
        min=RESOLUTION_RANGE[0],
        max=RESOLUTION_RANGE[1],
        step=32,
        initial_value=max_resolution,
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
        nonlocal readout_shown
        now = time.monotonic()
        if not stats.full and now - readout_shown < READOUT_PERIOD_S:
            return
        readout_shown = now
        kind = "full" if stats.full else "preview"
        readout.value = (
            f"{stats.seconds * 1e3:.0f} ms ({1.0 / stats.seconds:.1f} fps), {stats.width}x{stats.height} {kind}"
        )

    @server.on_client_connect
    def _(client: "viser.ClientHandle") -> None:
        loop = ClientRenderLoop(client, renderer, settings, show_stats, turns)
        loops[client.client_id] = loop
        client.camera.on_update(loop.camera_moved)
        loop.camera_moved(client.camera)

    @server.on_client_disconnect
    def _(client: "viser.ClientHandle") -> None:
        loop = loops.pop(client.client_id, None)
        if loop is not None:
            loop.close()

    def stop_all() -> None:
        stopping = list(loops.values())
        for loop in stopping:
            loop.close()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for loop in stopping:
            loop.join(max(deadline - time.monotonic(), 0.0))

    return stop_all, refresh_all


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
