"""Load test of ``studio view``: N websocket clients orbit a Gaussian scene at once.

    python benchmarks/viewer_load.py PATH [--clients 20] [--seconds 60] [--rate 20] [--make-scene 30000]

Starts ``studio view PATH`` on 127.0.0.1 (a free port) as a subprocess and connects ``--clients``
websocket clients that speak viser's protocol as the browser does: msgpack, one
``ViewerCameraMessage`` dict per message up, windows (msgpack arrays) of message dicts down. Each
client waits for the camera the server frames the scene with (``SetCamera*`` messages), then moves
it along an orbit about the look-at point (one turn per ``ORBIT_PERIOD_S``, clients spread over
the circle) and sends it ``--rate`` times per second, as a browser drag does (viser's page sends
at most 50 per second). The measured window of ``--seconds`` starts once every client has its
first frame (the warm-up: connecting, the first renders); then the clients disconnect, the
script waits for the server's render threads to end, and stops the server with Ctrl-C (SIGINT),
or kills it if it does not exit within ``STOP_TIMEOUT_S``. The server also dies with this process
(``PR_SET_PDEATHSIG``), so no run leaves a server behind.

Frame latency: each camera update sent in the window is one sample, the time from sending it to
receiving the client's next ``BackgroundImageMessage``. A frame already rendering when the update
arrives counts, so the motion-to-photon time can be up to one render longer. Memory: the
server's resident set (``VmRSS`` of the process and its children, from /proc) every
``SAMPLE_S``, with its thread count.

``--make-scene N`` first writes a random N-Gaussian scene (SH degree 3) to PATH if PATH does not
exist. The test (``tests/test_viewer_load.py``) imports ``run_load`` and ``write_scene``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import msgspec
import numpy as np

ORBIT_PERIOD_S = 20.0  # one turn about the scene per client
FOV_Y = math.radians(50.0)
ASPECT = 16.0 / 9.0  # a landscape browser canvas
SAMPLE_S = 0.5  # server memory sampling period
START_TIMEOUT_S = 120.0  # until "scene loaded" (the first run of the studio backend may compile it)
WARMUP_TIMEOUT_S = 120.0  # until every client has its first frame
FRAMING_TIMEOUT_S = 10.0  # for the camera the server frames the scene with
SETTLE_TIMEOUT_S = 10.0  # for the render threads of disconnected clients to end
STOP_TIMEOUT_S = 15.0  # between Ctrl-C and SIGKILL
_PR_SET_PDEATHSIG = 1


@dataclass
class ClientStats:
    """What one client saw; times in seconds from the start of the measured window (``_drive``)."""

    frames: int = 0  # background images received in the measured window
    latencies: list[tuple[float, float]] = field(default_factory=list)  # per camera update: (sent at, latency), s
    sizes: list[tuple[int, int]] = field(default_factory=list)  # (width, height) of those frames, pixels
    first_frame_at: float | None = None  # s from the start of the measured window (<= 0: during the warm-up)
    last_frame_at: float | None = None
    framed: bool = False  # the server sent the camera that frames the scene


@dataclass
class LoadResult:
    """One load run: per-client statistics and the server's memory (bytes) and threads over time."""

    clients: list[ClientStats]
    seconds: float  # length of the measured window
    rss: list[tuple[float, int]]  # (s since the window started, RSS bytes), until the clients disconnected
    rss_idle: int  # after the scene loaded, before any client
    rss_after: int  # after the clients disconnected
    threads_idle: int
    threads_peak: int  # while the clients were connected
    threads_after: int  # after the render threads of the disconnected clients ended
    exit_code: int | None = None  # of the server after Ctrl-C (130), None if it had to be killed

    def latencies(self, start: float = 0.0, end: float = math.inf) -> np.ndarray:
        """All clients' latencies (s) of the camera updates sent from ``start`` to ``end`` s into the run."""
        return np.array([x for c in self.clients for t, x in c.latencies if start <= t < end])

    def latency_percentile(self, q: float, start: float = 0.0, end: float = math.inf) -> float:
        """The q-th percentile (0-100) of ``latencies(start, end)``, s (inf without samples)."""
        samples = self.latencies(start, end)
        return float(np.percentile(samples, q)) if len(samples) else math.inf

    def worst_client_p95(self) -> float:
        """The largest per-client 95th latency percentile, s (inf if a client has no samples): fairness."""
        return max((np.percentile([x for _, x in c.latencies], 95) if c.latencies else math.inf) for c in self.clients)

    def fps(self) -> list[float]:
        """Frames per second of each client in the measured window."""
        return [c.frames / self.seconds for c in self.clients]

    @property
    def rss_peak(self) -> int:
        """The largest server RSS seen, bytes."""
        return max([self.rss_idle, self.rss_after, *(r for _, r in self.rss)])

    def rss_growth(self) -> int:
        """Peak RSS of the second half of the run minus that of the first half, bytes (memory creep)."""
        first = [r for t, r in self.rss if t < self.seconds / 2]
        second = [r for t, r in self.rss if t >= self.seconds / 2]
        return max(second) - max(first) if first and second else 0

    def summary(self) -> str:
        """A few lines: latency percentiles (ms), frames and fps per client, frame sizes, memory (MiB), threads."""
        mib = 1 << 20
        frames = [c.frames for c in self.clients]
        sizes = sorted((s for c in self.clients for s in c.sizes), key=lambda s: s[0] * s[1])
        median_size = sizes[len(sizes) // 2] if sizes else (0, 0)
        fps = self.fps()
        return "\n".join(
            [
                f"clients {len(self.clients)}, {self.seconds:.0f} s, {len(self.latencies())} camera updates answered",
                "latency ms: p50 {:.0f}, p95 {:.0f}, p99 {:.0f}; p95 1st half {:.0f}, 2nd half {:.0f}".format(
                    *(1e3 * self.latency_percentile(q) for q in (50, 95, 99)),
                    1e3 * self.latency_percentile(95, end=self.seconds / 2),
                    1e3 * self.latency_percentile(95, start=self.seconds / 2),
                )
                + f"; worst client's p95 {1e3 * self.worst_client_p95():.0f}",
                f"frames per client: min {min(frames)}, median {int(np.median(frames))}, max {max(frames)}; "
                f"fps per client: min {min(fps):.2f}, mean {np.mean(fps):.2f}; "
                f"median frame {median_size[0]}x{median_size[1]}",
                f"server RSS MiB: idle {self.rss_idle / mib:.0f}, peak {self.rss_peak / mib:.0f}, "
                f"after disconnect {self.rss_after / mib:.0f}, growth 2nd half {self.rss_growth() / mib:+.0f}",
                f"server threads: idle {self.threads_idle}, peak {self.threads_peak}, after disconnect "
                f"{self.threads_after}; exit code {self.exit_code}",
            ]
        )


def write_scene(path: Path, n: int, sh_degree: int = 3, seed: int = 0) -> None:
    """Write a random scene of ``n`` Gaussians to ``path`` (3DGS PLY): means normal with a standard
    deviation of 0.5 (world units), scales of ~0.02, random colours and opacities, small SH terms."""
    import torch

    from studio.export import save_gaussians_ply
    from studio.gaussians import Gaussians, rgb_to_sh

    gen = torch.Generator().manual_seed(seed)
    sh = 0.05 * torch.randn(n, (sh_degree + 1) ** 2, 3, generator=gen)
    sh[:, 0] = rgb_to_sh(torch.rand(n, 3, generator=gen))
    gaussians = Gaussians(
        means=0.5 * torch.randn(n, 3, generator=gen),
        quats=torch.randn(n, 4, generator=gen),
        scales=torch.exp(torch.randn(n, 3, generator=gen) * 0.3 - 3.8),
        opacities=0.1 + 0.8 * torch.rand(n, generator=gen),
        sh=sh,
    )
    save_gaussians_ply(path, gaussians)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    """Runs in the server's child process before exec: SIGKILL it when this process dies."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (from /proc/<pid>/task/*/children)."""
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{p}/task"):
                with contextlib.suppress(OSError), open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
    return pids


def memory_and_threads(pid: int) -> tuple[int, int]:
    """(resident set in bytes, thread count) of ``pid`` and its descendants, from /proc/<pid>/status."""
    rss = threads = 0
    for p in _process_tree(pid):
        with contextlib.suppress(OSError), open(f"/proc/{p}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1]) * 1024  # kB
                elif line.startswith("Threads:"):
                    threads += int(line.split()[1])
    return rss, threads


class ViewerServer:
    """``studio view PATH`` in a subprocess on 127.0.0.1, as a context manager.

    Entering waits for "scene loaded" and parses the real port from the printed address; leaving
    sends Ctrl-C (SIGINT), waits up to ``STOP_TIMEOUT_S`` and then kills the process group.
    ``exit_code`` is the server's status after Ctrl-C, or None when it had to be killed.
    """

    def __init__(
        self, path: Path, backend: str = "auto", max_resolution: int = 512, log: Callable[[str], None] = print
    ):
        self.path, self.backend, self.max_resolution, self.log = path, backend, max_resolution, log
        self.lines: list[str] = []
        self.exit_code: int | None = None
        self.port = 0

    def __enter__(self) -> "ViewerServer":
        command = [sys.executable, "-m", "studio.cli.main", "view", str(self.path), "--port", str(_free_port())]
        command += ["--backend", self.backend, "--max-resolution", str(self.max_resolution)]
        self.proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # a Ctrl-C in the terminal reaches only this script; it stops the server
            preexec_fn=_die_with_parent,
        )
        threading.Thread(target=self._read_output, daemon=True).start()
        try:
            self._wait_for("scene loaded", START_TIMEOUT_S)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        address = next(line for line in self.lines if "http://" in line)
        self.port = int(address.split("http://")[1].split()[0].rsplit(":", 1)[1])
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.exit_code = self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.log(f"studio view did not stop within {STOP_TIMEOUT_S:.0f} s of Ctrl-C; killing it")
        else:
            self.exit_code = self.proc.returncode
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # the server, if still running, and anything it started
        self.proc.wait()
        if self.exit_code != 130:
            self.log(f"studio view exited with {self.exit_code}; its output ended with:\n{''.join(self.lines[-30:])}")

    def _read_output(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    def _wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"studio view did not print {text!r}; its output:\n{''.join(self.lines)}")
            time.sleep(0.1)


def _look_at_wxyz(eye: np.ndarray, target: np.ndarray, up: np.ndarray) -> tuple[float, ...]:
    """R_world_camera (w, x, y, z) of an OpenCV camera (x right, y down, z forward) at ``eye`` looking at ``target``."""
    from viser import transforms

    forward = (target - eye) / np.linalg.norm(target - eye)
    right = np.cross(forward, up)
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    return tuple(transforms.SO3.from_matrix(np.stack([right, down, forward], axis=1)).wxyz.tolist())


def _camera_message(eye: np.ndarray, target: np.ndarray, up: np.ndarray) -> bytes:
    """A browser's ``ViewerCameraMessage`` (msgpack) for a camera at ``eye`` looking at ``target``."""
    return msgspec.msgpack.encode(
        {
            "type": "ViewerCameraMessage",
            "wxyz": _look_at_wxyz(eye, target, up),
            "position": eye.tolist(),
            "fov": FOV_Y,
            "aspect": ASPECT,
            "look_at": target.tolist(),
            "up_direction": up.tolist(),
        }
    )


def _jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) in pixels from a JPEG's start-of-frame segment, (0, 0) if there is none."""
    i = 2
    while i + 9 < len(data):
        marker, length = data[i + 1], int.from_bytes(data[i + 2 : i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return int.from_bytes(data[i + 7 : i + 9], "big"), int.from_bytes(data[i + 5 : i + 7], "big")
        i += 2 + length
    return 0, 0


@dataclass
class _Window:
    """The measured part of a run, ``time.perf_counter`` seconds: set once every client has its first frame."""

    start: float = math.inf
    stop_at: float = math.inf


async def _client(url: str, index: int, n_clients: int, rate_hz: float, window: _Window, stats: ClientStats) -> None:
    """One browser-like client (module docstring); fills ``stats`` (absolute ``time.perf_counter`` times)."""
    from websockets.asyncio.client import connect

    eye, target, up = np.array([3.0, 0.0, 1.0]), np.zeros(3), np.array([0.0, 0.0, 1.0])
    sent: list[float] = []  # send times of the measured camera updates not answered by a frame yet
    framed = asyncio.Event()

    async with connect(url, max_size=None, open_timeout=30) as ws:

        async def receive() -> None:
            nonlocal eye, target, up
            async for raw in ws:
                now = time.perf_counter()
                for message in msgspec.msgpack.decode(raw):
                    kind = message["type"]
                    if kind == "BackgroundImageMessage":
                        if stats.first_frame_at is None:
                            stats.first_frame_at = now
                        if now >= window.start:
                            stats.frames += 1
                            stats.latencies += [(t, now - t) for t in sent]
                            stats.sizes.append(_jpeg_size(message["rgb_bytes"]))
                        stats.last_frame_at = now
                        sent.clear()
                    elif kind == "SetCameraPositionMessage":
                        eye = np.array(message["position"], dtype=float)
                    elif kind == "SetCameraLookAtMessage":
                        target = np.array(message["look_at"], dtype=float)
                    elif kind == "SetCameraUpDirectionMessage":
                        up = np.array(message["position"], dtype=float)  # viser names the field "position"
                        stats.framed = True  # the last of the framing messages (studio.viewer.app._frame_scene)
                        framed.set()
            raise ConnectionError("studio view closed the connection")

        receiver = asyncio.create_task(receive())
        try:
            await ws.send(_camera_message(eye, target, up))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(framed.wait(), FRAMING_TIMEOUT_S)
            offset, phase = eye - target, 2.0 * math.pi * index / n_clients
            axis = up / np.linalg.norm(up)
            start = next_send = time.perf_counter()
            while next_send < window.stop_at and not receiver.done():
                angle = phase + 2.0 * math.pi * (next_send - start) / ORBIT_PERIOD_S
                await ws.send(_camera_message(target + _rotate(offset, axis, angle), target, up))
                if time.perf_counter() >= window.start:
                    sent.append(time.perf_counter())
                next_send += 1.0 / rate_hz
                await asyncio.sleep(max(next_send - time.perf_counter(), 0.0))
            if receiver.done():
                receiver.result()  # raises what ended it
        finally:
            receiver.cancel()
            await asyncio.gather(receiver, return_exceptions=True)


def _rotate(v: np.ndarray, axis: np.ndarray, angle: float) -> np.ndarray:
    """``v`` rotated by ``angle`` (radians) about the unit vector ``axis`` (Rodrigues)."""
    c, s = math.cos(angle), math.sin(angle)
    return v * c + np.cross(axis, v) * s + axis * (axis @ v) * (1.0 - c)


async def _drive(
    server: ViewerServer, clients: int, seconds: float, rate_hz: float
) -> tuple[list[ClientStats], list[tuple[float, int]], int]:
    """Warm up (every client connected and shown its first frame, at most ``WARMUP_TIMEOUT_S``), then
    measure for ``seconds`` while sampling the server every ``SAMPLE_S``; returns (stats with times
    relative to the measured window's start, [(t s, RSS bytes)] from then on, peak thread count)."""
    stats = [ClientStats() for _ in range(clients)]
    window = _Window()
    url = f"ws://127.0.0.1:{server.port}"
    tasks = [asyncio.create_task(_client(url, i, clients, rate_hz, window, s)) for i, s in enumerate(stats)]
    warmup_end = time.perf_counter() + WARMUP_TIMEOUT_S
    while any(s.first_frame_at is None for s in stats) and time.perf_counter() < warmup_end:
        await asyncio.wait(tasks, timeout=0.05, return_when=asyncio.FIRST_EXCEPTION)
        for task in tasks:
            if task.done():
                task.result()  # a client that failed while connecting ends the run
    window.start = time.perf_counter()
    window.stop_at = window.start + seconds
    samples: list[tuple[float, int]] = []
    peak_threads = 0
    while not all(t.done() for t in tasks):
        rss, threads = memory_and_threads(server.proc.pid)
        samples.append((time.perf_counter() - window.start, rss))
        peak_threads = max(peak_threads, threads)
        await asyncio.wait(tasks, timeout=SAMPLE_S)
    for task in tasks:
        task.result()  # a client's error ends the run
    for s in stats:
        s.latencies = [(t - window.start, x) for t, x in s.latencies]
        s.first_frame_at = None if s.first_frame_at is None else s.first_frame_at - window.start
        s.last_frame_at = None if s.last_frame_at is None else s.last_frame_at - window.start
    return stats, samples, peak_threads


def run_load(
    path: Path,
    clients: int,
    seconds: float,
    rate_hz: float = 20.0,
    backend: str = "auto",
    max_resolution: int = 512,
    log: Callable[[str], None] = print,
) -> LoadResult:
    """Serve ``path`` with ``studio view``, run ``clients`` orbiting clients for ``seconds`` (module
    docstring), wait for their render threads to end, stop the server; returns the figures."""
    with ViewerServer(path, backend, max_resolution, log) as server:
        rss_idle, threads_idle = memory_and_threads(server.proc.pid)
        log(f"studio view on port {server.port}: RSS {rss_idle >> 20} MiB, {threads_idle} threads; {clients} clients")
        stats, samples, threads_peak = asyncio.run(_drive(server, clients, seconds, rate_hz))
        # The render threads end after their last render; viser's idle worker threads stay.
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        rss_after, threads_after = memory_and_threads(server.proc.pid)
        while threads_after > threads_peak - clients and time.monotonic() < deadline:
            time.sleep(SAMPLE_S)
            rss_after, threads_after = memory_and_threads(server.proc.pid)
    result = LoadResult(stats, seconds, samples, rss_idle, rss_after, threads_idle, threads_peak, threads_after)
    result.exit_code = server.exit_code
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", type=Path, help="Gaussian PLY to serve")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the clients move their cameras")
    parser.add_argument("--rate", type=float, default=20.0, help="camera updates per second per client")
    parser.add_argument("--backend", default="auto", choices=("auto", "torch", "studio"))
    parser.add_argument("--max-resolution", type=int, default=512, help="studio view's --max-resolution, pixels")
    parser.add_argument("--make-scene", type=int, metavar="N", help="write N random Gaussians to PATH if it is missing")
    args = parser.parse_args()
    for sig in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C or kill stop the server too, even in a background job
        signal.signal(sig, signal.default_int_handler)
    if args.make_scene and not args.path.exists():
        write_scene(args.path, args.make_scene)
        print(f"wrote {args.make_scene:,} Gaussians to {args.path}")
    try:
        result = run_load(args.path, args.clients, args.seconds, args.rate, args.backend, args.max_resolution)
    except KeyboardInterrupt:
        sys.exit("interrupted; studio view was stopped")
    print(result.summary())


if __name__ == "__main__":
    main()
