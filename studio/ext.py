"""JIT loader of the project's C++/CUDA extensions (sources in ``cuda/``, installed as ``studio.cuda``).

Each extension is a named source set in ``EXTENSIONS``. ``load_extension(name)`` compiles it with
``torch.utils.cpp_extension.load`` on first use (about 1-2 minutes), keeps the build in
``~/.cache/distill-studio/extensions/<name>-torch<version>-<cpu|cuda>`` (the root can be moved
with the ``STUDIO_EXT_DIR`` environment variable), and returns the module, cached in-process.
A CUDA build (``with_cuda``) also compiles the ``.cu`` sources with ``-DSTUDIO_WITH_CUDA``; it
needs nvcc (``CUDA_HOME``) and, where no GPU is visible, ``TORCH_CUDA_ARCH_LIST``.

``python -m studio.ext [NAME ...] [--cuda]`` builds extensions ahead of time (all of them, CPU
variant, by default).
"""

from __future__ import annotations

import argparse
import importlib.resources
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Iterator, Optional

import torch


@dataclass(frozen=True)
class ExtensionSources:
    """File names (in ``cuda/``) of one extension: C++ sources always compiled, CUDA sources
    compiled only for CUDA builds, and headers (which only decide when to rebuild)."""

    cpp: tuple[str, ...]
    cuda: tuple[str, ...] = ()
    headers: tuple[str, ...] = ()

    def files(self, with_cuda: bool) -> tuple[str, ...]:
        return self.cpp + (self.cuda if with_cuda else ()) + self.headers


EXTENSIONS: dict[str, ExtensionSources] = {
    "gauss": ExtensionSources(
        cpp=(
            "gauss_ext.cpp",
            "gauss_rasterize_cpu.cpp",
            "gauss_rasterize_avx2.cpp",
            "gauss_isect_cpu.cpp",
            "gauss_project_cpu.cpp",
            "gauss_sh_cpu.cpp",
        ),
        cuda=("gauss_rasterize.cu",),
        headers=("gauss_rasterize.h", "gauss_rasterize_cpu.h"),
    ),
    "image": ExtensionSources(cpp=("image_ssim_cpu.cpp",)),
    "mesh": ExtensionSources(
        cpp=("mesh_ext.cpp", "mesh_rasterize_cpu.cpp"),
        cuda=("mesh_rasterize.cu",),
        headers=("mesh_rasterize.h",),
    ),
}

_loaded: dict[tuple[str, bool], ModuleType] = {}
_lock = threading.Lock()


def _candidate_source_dirs() -> Iterator[Path]:
    """The installed ``studio.cuda`` package data, then the repository's ``cuda/`` folder."""
    try:
        installed = importlib.resources.files("studio.cuda")
    except (ModuleNotFoundError, TypeError):
        installed = None
    if isinstance(installed, Path):
        yield installed
    yield Path(__file__).resolve().parent.parent / "cuda"


def source_dir(name: str, with_cuda: bool = False) -> Path:
    """Folder holding the source files of extension ``name`` (its CUDA ones too if ``with_cuda``)."""
    files = EXTENSIONS[name].files(with_cuda)
    for folder in _candidate_source_dirs():
        if all((folder / f).is_file() for f in files):
            return folder
    raise FileNotFoundError(f"Sources of the studio '{name}' extension ({', '.join(files)}) were not found.")


def build_dir(name: str, with_cuda: bool) -> Path:
    """``$STUDIO_EXT_DIR`` (default ``~/.cache/distill-studio/extensions``)/<name>-torch<ver>-<cpu|cuda>."""
    root = os.environ.get("STUDIO_EXT_DIR") or Path.home() / ".cache" / "distill-studio" / "extensions"
    return Path(root) / f"{name}-torch{torch.__version__}-{'cuda' if with_cuda else 'cpu'}"


def _cuda_toolkit() -> Optional[Path]:
    """torch's CUDA_HOME if it holds nvcc and the runtime headers, else None."""
    from torch.utils import cpp_extension

    home = cpp_extension.CUDA_HOME
    if home and (Path(home) / "bin" / "nvcc").is_file() and (Path(home) / "include" / "cuda_runtime.h").is_file():
        return Path(home)
    return None


def _needs_build(module_name: str, folder: Path, files: tuple[str, ...], out_dir: Path) -> bool:
    """Whether the cached library is missing or older than a source (ninja decides in the end)."""
    library = out_dir / f"{module_name}.so"
    if not library.is_file():
        return True
    built = library.stat().st_mtime
    return any((folder / f).stat().st_mtime > built for f in files)


def load_extension(name: str = "gauss", with_cuda: Optional[bool] = None, verbose: bool = False) -> ModuleType:
    """Compile (first use) and import extension ``name``.

    Args:
        name: a key of ``EXTENSIONS``.
        with_cuda: also build the CUDA kernels; default: when a GPU is visible and nvcc found.
        verbose: show the compiler's output.
    Returns:
        The extension module (``module.with_cuda`` tells which variant it is).
    """
    if name not in EXTENSIONS:
        raise ValueError(f"Unknown studio extension {name!r}; known: {sorted(EXTENSIONS)}.")
    from torch.utils import cpp_extension

    if with_cuda is None:
        with_cuda = torch.cuda.is_available() and _cuda_toolkit() is not None
    key = (name, bool(with_cuda))
    with _lock:
        if key in _loaded:
            return _loaded[key]
        sources = EXTENSIONS[name]
        folder = source_dir(name, with_cuda)
        if with_cuda:
            if _cuda_toolkit() is None:
                raise RuntimeError(
                    f"Building the studio '{name}' extension with CUDA needs the CUDA toolkit (nvcc and headers); "
                    f"torch found CUDA_HOME={cpp_extension.CUDA_HOME!r}: set CUDA_HOME (e.g. /usr/local/cuda-13.0)."
                )
            if not torch.cuda.is_available() and not os.environ.get("TORCH_CUDA_ARCH_LIST"):
                raise RuntimeError("No GPU is visible: set TORCH_CUDA_ARCH_LIST (e.g. '9.0') to build CUDA kernels.")
        module_name = f"studio_{name}_{'cuda' if with_cuda else 'cpu'}"
        out_dir = build_dir(name, with_cuda)
        out_dir.mkdir(parents=True, exist_ok=True)
        if _needs_build(module_name, folder, sources.files(with_cuda), out_dir):
            print(
                f"building the studio '{name}' extension (first use, about 1-2 minutes)...", file=sys.stderr, flush=True
            )
        openmp = ["-fopenmp"] if torch.backends.openmp.is_available() else []
        defines = ["-DSTUDIO_WITH_CUDA"] if with_cuda else []
        module = cpp_extension.load(
            name=module_name,
            sources=[str(folder / f) for f in sources.cpp + (sources.cuda if with_cuda else ())],
            extra_cflags=["-O3", *openmp, *defines],
            extra_cuda_cflags=["-O3", *defines],
            extra_ldflags=openmp,
            extra_include_paths=[str(folder)],
            build_directory=str(out_dir),
            with_cuda=bool(with_cuda),
            verbose=verbose,
        )
        _loaded[key] = module
        return module


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m studio.ext", description="Build studio's C++/CUDA extensions.")
    parser.add_argument("names", nargs="*", default=sorted(EXTENSIONS), help="extensions to build (default: all)")
    parser.add_argument("--cuda", action="store_true", help="build the CUDA variant (needs nvcc)")
    parser.add_argument("--verbose", action="store_true", help="show the compiler's output")
    args = parser.parse_args(argv)
    for name in args.names:
        module = load_extension(name, with_cuda=args.cuda, verbose=args.verbose)
        print(f"{name}: {module.__file__}")


if __name__ == "__main__":
    main()
