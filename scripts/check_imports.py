"""Check the import-linter contracts of pyproject.toml (``make lint``).

import-linter reads a package from one folder, while ``studio.methods``, ``studio.viewer``, ...
live in their own folders (setup.py ``PACKAGE_DIRS``). This lays the Python files out as they are
installed, in a temporary folder, and runs ``lint-imports`` on that copy.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from setup import PACKAGE_DIRS  # noqa: E402


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        for package, folder in PACKAGE_DIRS.items():
            target = Path(tmp, *package.split("."))
            for source in (ROOT / folder).rglob("*.py"):
                dest = target / source.relative_to(ROOT / folder)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, dest)
        env = {**os.environ, "PYTHONPATH": tmp}
        lint = Path(sys.executable).with_name("lint-imports")
        return subprocess.call([str(lint), str(ROOT / "pyproject.toml")], env=env, cwd=tmp)


if __name__ == "__main__":
    sys.exit(main())
