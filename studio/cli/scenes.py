"""``studio scenes make --output DIR [...]``: render a ToyWorld scene as a NeRF-synthetic dataset.

Writes transforms_{train,val,test}.json, RGBA views and every AOV (albedo, roughness, metallic,
normal, depth, ids, normal maps), relit test splits, gt_mesh.obj, meta.json (caption, category,
materials, and the scene's ToyWorld split: train, validation or test, also printed) and a render
sheet; see ``studio.scenes.toyworld.dataset``. The folder appears only when complete (built under
a temporary name beside it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from studio.io import StudioInputError
from studio.io.inputs import Input, Kind
from studio.scenes.toyworld.dataset import MakeConfig

_DEFAULTS = MakeConfig()  # one source of the defaults: the library's config


@dataclass
class Make:
    """Make one ToyWorld dataset (procedural scene, Monte-Carlo ground truth, all AOVs)."""

    output: Path
    """Dataset folder to create (must not exist or be empty, unless --overwrite)."""
    seed: int = _DEFAULTS.seed
    """Scene seed: the scene, materials, cameras and render noise are a function of it. Its split
    (scenes/toyworld/splits.json): 0-899 test, 900-999 validation, >= 1000 train unless its caption
    or category is held out."""
    kind: Literal["object", "multi"] = _DEFAULTS.kind  # type: ignore[assignment]
    """One object, or 2-4 objects."""
    n_train: int = _DEFAULTS.n_train
    """Training views."""
    n_val: int = _DEFAULTS.n_val
    """Validation views (0: transforms_val.json repeats the test views)."""
    n_test: int = _DEFAULTS.n_test
    """Test views (also rendered under every --relight environment, as are the validation views)."""
    res: int = _DEFAULTS.res
    """Image width and height in pixels."""
    spp: int = _DEFAULTS.spp
    """Environment-light samples per pixel (spread over the --aa primary rays)."""
    aa: int = _DEFAULTS.aa
    """Primary rays per pixel (antialiasing; stratified when a square number; 1 = pixel centre)."""
    env: str = _DEFAULTS.env
    """Lighting environment: sky, sunset, studio, overcast, night or sun (hard shadows)."""
    relight: str = ",".join(_DEFAULTS.relight)
    """Comma-separated environments of the relit test splits test_<env>/ ('' for none)."""
    path: Literal["orbit", "random", "forward", "arc", "ring"] = _DEFAULTS.path  # type: ignore[assignment]
    """Camera path (arc: train views in arcs of 5, the trajectories videoscene trains on; ring: train views evenly
    spaced in azimuth at 15 deg elevation, the sparse-view inputs; test ring as orbit for both)."""
    fov: float = _DEFAULTS.fov_deg
    """Horizontal field of view in degrees."""
    aovs: Literal["all", "eval", "test", "none"] = "all"
    """Splits that get AOV files: all, the evaluation splits (val and test), only the test split, or none."""
    sheet: Path | None = None
    """Also copy the render sheet (views x AOVs grid) to this PNG (it is always DIR/sheet.png)."""
    overwrite: bool = False
    """Replace an existing non-empty output folder."""

    def inputs(self) -> list[Input]:
        return [
            Input("--output", Kind.OUTPUT_DIR, self.output, required=True),
            Input("--sheet", Kind.OUTPUT_FILE, self.sheet, suffixes=(".png",)),
        ]

    def main(self) -> None:
        from studio.scenes.toyworld.dataset import MakeConfig, make_dataset

        relight = tuple(e.strip() for e in self.relight.split(",") if e.strip())
        aov_splits = {"all": ("train", "val", "test"), "eval": ("val", "test"), "test": ("test",), "none": ()}[
            self.aovs
        ]
        cfg = MakeConfig(
            seed=self.seed,
            kind=self.kind,
            n_train=self.n_train,
            n_val=self.n_val,
            n_test=self.n_test,
            res=self.res,
            spp=self.spp,
            aa=self.aa,
            env=self.env,
            relight=relight,
            path=self.path,
            fov_deg=self.fov,
            aov_splits=aov_splits,
        )
        try:
            make_dataset(self.output, cfg, overwrite=self.overwrite)
        except (ValueError, FileExistsError) as err:
            raise StudioInputError(str(err)) from None
        if self.sheet is not None:
            from studio.io import atomic_write_bytes

            atomic_write_bytes(self.sheet, (self.output / "sheet.png").read_bytes())
            print(f"Wrote {self.sheet}")


COMMANDS = {"make": Make}
