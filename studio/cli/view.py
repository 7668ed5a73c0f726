"""``studio view PATH``: open a result in the viser viewer (http://127.0.0.1:7070 by default).

PATH is a Gaussian PLY, a mesh (.ply/.glb/.gltf/.obj/.off/.stl) or a trained run's config.yml.
The server binds 127.0.0.1 unless ``--host`` says otherwise, answers before the scene is loaded,
and runs in the foreground until Ctrl-C. The default port 7070 leaves Nerfstudio's 7007 free for a
training viewer; if the port is taken, viser picks the next free one and the printed address says
which.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tyro

from studio.io import StudioInputError
from studio.io.inputs import Input, Kind
from studio.viewer.app import DEFAULT_HOST, DEFAULT_MAX_RESOLUTION, DEFAULT_PORT, RESOLUTION_RANGE


@dataclass
class View:
    """Open a Gaussian PLY, a mesh, or a trained run's config.yml in the viser viewer."""

    path: tyro.conf.Positional[Path]
    """Gaussian PLY, mesh file, or a trained run's config.yml."""
    host: str = DEFAULT_HOST
    """Interface to bind; 0.0.0.0 exposes the viewer to the network."""
    port: int = DEFAULT_PORT
    """Port of the web page and its websocket."""
    max_resolution: int = DEFAULT_MAX_RESOLUTION
    """Longest side, in pixels, of Gaussian renders while the camera is still."""
    up: tuple[float, float, float] = (0.0, 0.0, 1.0)
    """World up axis of the scene (orbit controls turn about it)."""
    backend: Literal["auto", "torch", "studio"] = "auto"
    """Gaussian rasterizer backend."""

    def inputs(self) -> list[Input]:
        """The scene file (header-checked before the server starts)."""
        return [Input("PATH", Kind.SCENE, self.path, required=True)]

    def main(self) -> None:
        """Check the arguments, then serve until Ctrl-C."""
        from studio.viewer.app import run_viewer

        path = Path(self.path)
        if not 0 < self.port < 65536:
            raise StudioInputError(f"--port {self.port} is not a TCP port (1-65535).")
        low, high = RESOLUTION_RANGE
        if not low <= self.max_resolution <= high:
            raise StudioInputError(f"--max-resolution must be between {low} and {high}.")
        if not any(self.up):
            raise StudioInputError("--up must be a non-zero vector.")

        _warn_if_not_loopback(self.host)
        _stop_on_interrupt_or_terminate()
        run_viewer(path, self.host, self.port, self.max_resolution, self.up, self.backend)


def _stop_on_interrupt_or_terminate() -> None:
    """Make SIGINT and SIGTERM end the server cleanly (a KeyboardInterrupt in the main thread).

    A process started in the background by a non-interactive shell inherits an ignored SIGINT;
    a foreground server must still stop on Ctrl-C or ``kill -INT``.
    """
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)


def _warn_if_not_loopback(host: str) -> None:
    """One warning line on stderr unless ``host`` is a loopback address (127.x.x.x, ::1) or localhost.

    The viewer has no authentication: whoever reaches the port sees the scene and drives the GUI.
    """
    import ipaddress
    import sys

    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name; "" binds every interface
        loopback = host.lower() == "localhost"
    if not loopback:
        print(
            f"warning: --host {host!r} makes the viewer reachable from the network, and it has no authentication.",
            file=sys.stderr,
            flush=True,
        )
