"""The `studio` command: fast start, verb listing, one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

STUDIO = str(Path(sys.executable).with_name("studio"))


def test_help_lists_verbs_without_importing_nerfstudio():
    code = (
        "import sys; from studio.cli.main import entrypoint; entrypoint(['--help']); print('nerfstudio' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for verb in ("export", "view", "render"):
        assert verb in out
    assert out.strip().endswith("False")


def test_unknown_verb_and_missing_input_are_one_line_errors(tmp_path: Path):
    bad = subprocess.run([STUDIO, "frobnicate"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown verb" in bad.stderr
    missing = subprocess.run(
        [
            STUDIO,
            "export",
            "gaussians",
            "--load-config",
            str(tmp_path / "nope.yml"),
            "--output",
            str(tmp_path / "x.ply"),
        ],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2
    assert "does not exist" in missing.stderr and "Traceback" not in missing.stderr
    assert not (tmp_path / "x.ply").exists()
