"""What a benchmark table records about how it was made: commit, command line and machine.

Shared by the benchmark drivers that write markdown tables (``sparse_view.py``, ``prd_ablation.py``).
"""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path


def machine() -> str:
    """Host, CPU model and cores, and the CUDA device when there is one."""
    cpu = platform.processor() or "cpu"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines() if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    text = f"{platform.node()}: {cpu}, {os.cpu_count()} cores"
    import torch

    if torch.cuda.is_available():
        text += f", {torch.cuda.get_device_name(0)}"
    return text


def commit() -> str:
    """HEAD of the repository this script is in (``+dirty`` when tracked files differ)."""
    root = Path(__file__).resolve().parents[1]
    git = ["git", "-C", str(root)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run([*git, "diff", "--quiet", "HEAD", "--"], capture_output=True).returncode != 0
    return (head or "unknown") + ("+dirty" if dirty else "")


def run_record() -> dict:
    """``commit``, ``command`` (this process's command line) and ``machine`` of the running benchmark."""
    return {"commit": commit(), "command": shlex.join([Path(sys.executable).name, *sys.argv]), "machine": machine()}


def markdown_header(record: dict) -> str:
    """One markdown line per entry of ``record`` (``key: `value` ``), for the top of a table file."""
    return "\n".join(f"{k}: `{v}`  " for k, v in record.items())
