"""``studio view`` under load: concurrent browser-like clients (``benchmarks/viewer_load.py``).

The default run: 3 clients for 5 s on a small scene (about 20 s in all). The ``slow`` run: 20
clients for 60 s on a 30k-Gaussian scene with the default backend. The bounds are generous (CI
machines are slow and shared) but fail for a server that stops sending frames, serves clients
unevenly, piles up renders, grows its memory, keeps the render threads of disconnected clients or
does not stop on Ctrl-C. Also: a non-loopback ``--host`` prints a warning.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from conftest import REPO


def _import_benchmark():
    """``benchmarks/viewer_load.py`` as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location("viewer_load", REPO / "benchmarks" / "viewer_load.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


viewer_load = _import_benchmark()
MIB = 1 << 20


def _check(result, min_fps: float, max_gap_s: float, max_p95_s: float, max_rss_rise: int, max_rss_growth: int) -> None:
    """The bounds shared by the default and the slow run (figures in the assertion messages).

    min_fps: frames per second of every client; max_gap_s: since each client's last frame at the
    end of the run; max_p95_s: 95th latency percentile, all clients (twice that for the worst
    client); max_rss_rise: server RSS above its idle level, bytes; max_rss_growth: from the first
    to the second half of the run, bytes.
    """
    summary = result.summary()
    print(summary)
    assert all(c.framed and c.first_frame_at is not None for c in result.clients), summary
    assert min(result.fps()) >= min_fps, summary  # every client keeps getting frames ...
    assert all(result.seconds - c.last_frame_at < max_gap_s for c in result.clients), summary  # ... until the end
    assert result.latency_percentile(95) < max_p95_s, summary
    assert result.worst_client_p95() < 2.0 * max_p95_s, summary
    # no pile-up: the second half is not much slower than the first
    assert result.latency_percentile(95, start=result.seconds / 2) < 2.0 * result.latency_percentile(95) + 0.5, summary
    assert result.rss_peak - result.rss_idle < max_rss_rise, summary
    assert result.rss_growth() < max_rss_growth, summary
    assert result.threads_after <= result.threads_peak - len(result.clients), summary  # render threads ended
    assert result.exit_code == 130, summary  # Ctrl-C stopped the server cleanly


@pytest.fixture(scope="module")
def small_scene(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("load") / "small.ply"
    viewer_load.write_scene(path, 2000, sh_degree=1)
    return path


def test_view_serves_concurrent_clients(small_scene):
    # The reference backend, as in test_viewer.py: `auto` may compile the C++ backend on first use.
    result = viewer_load.run_load(small_scene, clients=3, seconds=5.0, backend="torch", max_resolution=256)
    _check(result, min_fps=0.5, max_gap_s=2.5, max_p95_s=3.0, max_rss_rise=1536 * MIB, max_rss_growth=256 * MIB)


@pytest.mark.slow
def test_view_holds_20_clients_for_a_minute(tmp_path):
    from studio.ext import load_extension

    load_extension("gauss")  # build the CPU backend here (once) rather than inside the server
    path = tmp_path / "scene.ply"
    viewer_load.write_scene(path, 30_000)
    result = viewer_load.run_load(path, clients=20, seconds=60.0)
    _check(result, min_fps=0.2, max_gap_s=10.0, max_p95_s=5.0, max_rss_rise=1024 * MIB, max_rss_growth=128 * MIB)


@pytest.mark.parametrize(
    "host, warns",
    [("127.0.0.1", False), ("127.0.0.2", False), ("::1", False), ("localhost", False), ("0.0.0.0", True), ("", True)],
)
def test_non_loopback_host_warns(host, warns, small_scene, monkeypatch, capsys):
    import studio.cli.view as view
    import studio.viewer.app as app

    served = []
    monkeypatch.setattr(app, "run_viewer", lambda *args: served.append(args))
    monkeypatch.setattr(view, "_stop_on_interrupt_or_terminate", lambda: None)
    view.View(path=small_scene, host=host).main()
    err = capsys.readouterr().err
    assert served and served[0][1] == host
    if warns:
        assert len(err.splitlines()) == 1 and "reachable from the network" in err and "no authentication" in err
    else:
        assert err == ""
