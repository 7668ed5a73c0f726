"""``studio view`` with a real browser on the same machine: the panel's full-resolution frame time.

Starts ``studio view SCENE --max-resolution R`` and headless Chromium (software WebGL, as a browser on
a machine without a GPU; ``studio.viewer.devtools``) on this machine, opens the page, then
``--frames`` times drags the camera a little, waits until the viewer has rendered the still camera
at full size, and reads the panel's "Render" readout (``ms (fps), WxH full``). Prints each readout
and the median. Without ``--scene`` it views ``--gaussians`` random Gaussians (default 18,000;
scales 0.01-0.05 in [-0.8, 0.8]^3, as ``benchmarks/rasterize.py``) saved as a 3DGS PLY.

    python benchmarks/viewer_browser.py [--scene SCENE.ply] [--max-resolution 512] [--frames 10]
        [--backend auto] [--window 800x600]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from studio.export import save_gaussians_ply
from studio.gaussians import Gaussians, rgb_to_sh
from studio.viewer.devtools import CHROMIUM, DevTools, headless_chromium, wait_http

READOUT_JS = "Array.from(document.querySelectorAll('input')).map(e => e.value).filter(v => v.includes('fps')).join('|')"
FULL_FRAME = re.compile(r"(\d+) ms \(([\d.]+) fps\), (\d+)x(\d+) full")


def random_scene(path: Path, n: int, seed: int = 0) -> Path:
    """``n`` random Gaussians (RGB colours) written to ``path`` as a 3DGS PLY."""
    gen = torch.Generator().manual_seed(seed)
    gaussians = Gaussians(
        0.8 * (2.0 * torch.rand(n, 3, generator=gen) - 1.0),
        torch.nn.functional.normalize(torch.randn(n, 4, generator=gen), dim=-1),
        0.01 + 0.04 * torch.rand(n, 3, generator=gen),
        torch.rand(n, generator=gen),
        rgb_to_sh(torch.rand(n, 3, generator=gen))[:, None, :],
    )
    save_gaussians_ply(path, gaussians)
    return path


def drag(devtools: DevTools, x: float, y: float, dx: float) -> None:
    """A left-button drag of ``dx`` pixels from (x, y): the viewer's orbit control."""
    devtools.call("Input.dispatchMouseEvent", type="mousePressed", x=x, y=y, button="left", clickCount=1)
    for step in range(1, 6):
        devtools.call("Input.dispatchMouseEvent", type="mouseMoved", x=x + dx * step / 5, y=y, button="left")
    devtools.call("Input.dispatchMouseEvent", type="mouseReleased", x=x + dx, y=y, button="left", clickCount=1)


def full_frame_readout(devtools: DevTools, previous: str, timeout: float, same_after: float = 5.0) -> str:
    """The next full-resolution readout: the first one different from ``previous`` or, once
    ``same_after`` seconds have passed, ``previous`` itself (two frames can read the same)."""
    start = time.monotonic()
    text = previous
    while time.monotonic() - start < timeout:
        text = devtools.call("Runtime.evaluate", expression=READOUT_JS)["result"].get("value", "")
        if FULL_FRAME.search(text) and (text != previous or time.monotonic() - start > same_after):
            return text
        time.sleep(0.1)
    raise SystemExit(f"no full-resolution frame within {timeout:.0f} s (last readout: {text!r}).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scene", type=Path, help="what `studio view` opens (default: random Gaussians)")
    parser.add_argument("--gaussians", type=int, default=18000, help="count of the random scene")
    parser.add_argument("--max-resolution", type=int, default=512)
    parser.add_argument("--frames", type=int, default=10, help="full-resolution frames to read")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--window", default="800x600", help="browser window, WxH pixels")
    parser.add_argument("--port", type=int, default=8123)
    args = parser.parse_args()
    if not CHROMIUM.exists():
        raise SystemExit(f"needs Debian's chromium at {CHROMIUM} (apt-get install -y chromium).")
    width, height = (int(v) for v in args.window.split("x"))

    with tempfile.TemporaryDirectory() as tmp:
        scene = args.scene or random_scene(Path(tmp) / "scene.ply", args.gaussians)
        command = [sys.executable, "-m", "studio.cli.main", "view", str(scene), "--port", str(args.port)]
        command += ["--max-resolution", str(args.max_resolution), "--backend", args.backend]
        viewer = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{args.port}/"
            try:
                wait_http(url, viewer, timeout=120.0)
            except RuntimeError as err:
                raise SystemExit(f"studio view: {err}.") from None
            with headless_chromium(width, height) as devtools:
                devtools.navigate(url)
                readout = full_frame_readout(devtools, "", timeout=180.0)  # first use may build the extension
                print(f"{scene}: first frame {readout}")
                seconds = []
                for frame in range(args.frames):
                    drag(devtools, width / 2, height / 2, 40.0 if frame % 2 else -40.0)
                    readout = full_frame_readout(devtools, readout, timeout=60.0)
                    ms, fps, w, h = FULL_FRAME.search(readout).groups()
                    seconds.append(float(ms) / 1e3)
                    print(f"frame {frame + 1}: {ms} ms ({fps} fps), {w}x{h}")
        finally:
            viewer.terminate()
            viewer.wait(timeout=30)
    median = statistics.median(seconds)
    print(f"median full-resolution frame: {median * 1e3:.0f} ms ({1.0 / median:.1f} fps) over {len(seconds)} frames")


if __name__ == "__main__":
    main()
