"""``studio <verb> ...``: dispatch to one verb module, imported lazily so the command starts fast.

A verb module exposes either a dataclass with a ``main()`` method (one command) or a dict
``{name: dataclass}`` (a group such as ``studio export gaussians|mesh``). A command may declare
its inputs (``inputs() -> list[studio.io.inputs.Input]``): they are all checked before ``main()``
runs, so nothing is written or served for bad input. Input errors (``StudioInputError``) are
printed as one ``error:`` line on stderr and exit with status 2.
"""

from __future__ import annotations

import importlib
import sys

from studio.io.errors import StudioInputError, exit_with_input_error
from studio.io.inputs import validate

VERBS: dict[str, tuple[str, str, str]] = {
    # verb: (module, attribute, one-line help)
    "export": (
        "studio.cli.export",
        "COMMANDS",
        "export a result: gaussians (3DGS .ply), mesh (.glb/.obj/.ply), pbr (textured .glb + env .exr) or features (a splat-distill student as .safetensors)",
    ),
    "view": ("studio.cli.view", "View", "open a result (Gaussian .ply, mesh, or config.yml) in the viser viewer"),
    "render": ("studio.cli.render", "Render", "render a turntable video (.mp4) or an image sheet (.png) of a result"),
    "scenes": (
        "studio.cli.scenes",
        "COMMANDS",
        "make ToyWorld datasets (procedural scenes with AOVs and ground truth)",
    ),
    "eval": (
        "studio.cli.eval",
        "COMMANDS",
        "evaluate: prd (NVS, albedo, roughness, normals, relighting), image-to-3d (reconstruct from one view, score the "
        "others), sparse-view (reconstruct from 2-3 views, score the others), text-to-3d (generate per caption, score turntable views), attributes (the ToyWorld attribute classifier's held-out accuracy)",
    ),
    "features": (
        "studio.cli.features",
        "COMMANDS",
        "embedded 2D feature model: train toy-vit (DINO self-distillation on ToyWorld)",
    ),
    "generate": (
        "studio.cli.generate",
        "COMMANDS",
        "one-step 3D generation: flashworld (an image and/or a caption -> 3D Gaussians .ply in 1-4 steps)",
    ),
    "prior": (
        "studio.cli.prior",
        "COMMANDS",
        "embedded ToyWorld diffusion priors: train (toy-t2i, toy-nvs), sample a grid, or eval (sample quality on "
        "held-out scenes)",
    ),
}


def _usage() -> str:
    lines = ["usage: studio <verb> [options]", "", "verbs:"]
    lines += [f"  {verb:<8} {help_}" for verb, (_, _, help_) in VERBS.items()]
    lines += ["", "Run `studio <verb> --help` for the options of one verb."]
    return "\n".join(lines)


def entrypoint(argv: list[str] | None = None) -> None:
    """Console entry point of ``studio``."""
    import tyro

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        print(f"studio: unknown verb {verb!r}.\n\n{_usage()}", file=sys.stderr)
        raise SystemExit(2)
    module_name, attr, help_ = VERBS[verb]
    target = getattr(importlib.import_module(module_name), attr)
    if isinstance(target, dict):
        command = tyro.extras.subcommand_cli_from_dict(target, args=rest, prog=f"studio {verb}", description=help_)
    else:
        command = tyro.cli(target, args=rest, prog=f"studio {verb}", description=help_)
    try:
        if hasattr(command, "inputs"):
            validate(command.inputs())
        command.main()
    except StudioInputError as err:
        exit_with_input_error(err)
    except KeyboardInterrupt:
        raise SystemExit(130) from None


if __name__ == "__main__":
    entrypoint()
