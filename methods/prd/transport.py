"""prd's light-transport options: what is baked with the visibility and what shading adds.

PRD lights the PBR part with the environment alone, its visibility baked into a grid of SH.
Two options extend that (``PRDModelConfig.visibility`` / ``indirect``; ``studio.pbr.transport``):

* ``visibility rays``: besides the SH grid, the Gaussians are splatted into a density grid of
  ``shadow_resolution``^3 cells (``studio.pbr.gaussian_density``), and the ``shadow_lights``
  brightest texels of the light (learned, or the relighting light) that each carry at least
  ``shadow_min_share`` of its power are shaded as directional
  lights whose visibility is a shadow ray through it (``studio.pbr.shadow_rays``): a sun casts a
  sharp shadow, which degree-2 SH cannot hold. ``sh-grid`` is PRD's baked SH alone.
* ``indirect volume`` (after GS-IR, Liang et al. CVPR 2024): an SH volume of the light the
  radiance field sends to each visibility-grid point from the occluded directions (rays through
  the Gaussians' density that collect the radiance field's colour, linear, view-averaged), baked
  with the visibility; the diffuse term adds ``albedo / pi E_ind(x, n)``.
* ``indirect gaussian-sh`` (after Relightable 3D Gaussians, Gao et al. 2023): every Gaussian
  learns degree-1 SH of its incident indirect light (parameter ``indirect`` [N,4,3], zero at the
  start, optimiser group ``indirect``), turned into irradiance along its normal and splatted as a
  G-buffer; the same volume is baked as well, and ``indirect_weight * |E_splat - E_volume|``
  (mean over covered pixels, stages 3-4) ties the learned light to the radiance field's.

The indirect light is on from the diffuse stage, when the visibility is baked (``bake``); with
``visibility_resolution 0`` nothing is baked and neither option acts. Under another light
(relighting: ``render_gbuffers(light=...)``) the indirect light, baked or learned under the
training light, is scaled by the ratio of the two lights' mean radiance per channel
(``indirect_relight scale``; ``studio.pbr.indirect.relight_scale``) or dropped (``drop``); the shadow
rays follow the new light's own brightest texels.

Checkpoints carry the indirect volume (as the visibility grid); the shadow density is not saved
but splatted again from the loaded Gaussians the first time a loaded model shades (a few seconds).
"""

from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import Tensor

from studio.gaussians.container import Gaussians
from studio.gaussians.sh import sh_to_rgb
from studio.pbr.gaussian_density import splat_gaussians
from studio.pbr.indirect import IndirectVolume, bake_indirect, gaussian_sh_irradiance, relight_scale
from studio.pbr.tonemap import srgb_to_linear
from studio.pbr.transport import LightTransport

INDIRECT_PARAM = "indirect"
INDIRECT_GBUFFER = "indirect_sh"  # the splatted per-Gaussian irradiance (premultiplied, unclamped)
INDIRECT_SH = 4  # degree-1 SH coefficients per Gaussian and channel
RADIANCE_DENSITY_RESOLUTION = 48  # the density the indirect volume is baked through (as the visibility's)


def initial_indirect(n: int) -> Tensor:
    """Zero per-Gaussian indirect-light SH [n, 4, 3] (Relightable 3D Gaussians start from zero)."""
    return torch.zeros(n, INDIRECT_SH, 3)


def radiance_colors(g: Gaussians) -> Tensor:
    """The radiance field's view-averaged colour of each Gaussian [N,3], linear (its SH DC term)."""
    return srgb_to_linear(sh_to_rgb(g.sh[:, 0, :]).clamp(0.0, 1.0))


@torch.no_grad()
def bake(model, g: Gaussians, aabb: Tensor) -> None:
    """Bake the options' grids over ``aabb`` [2,3] (after the visibility): the shadow density
    (``visibility rays``) and the indirect volume (``indirect`` other than none)."""
    cfg = model.config
    model.shadow_density = None
    model.indirect_volume = None
    if cfg.visibility == "rays":
        model.shadow_density = splat_gaussians(g.means, g.quats, g.scales, g.opacities, aabb, cfg.shadow_resolution)
    if cfg.indirect != "none":
        density = splat_gaussians(
            g.means, g.quats, g.scales, g.opacities, aabb, RADIANCE_DENSITY_RESOLUTION, colors=radiance_colors(g)
        )
        model.indirect_volume = bake_indirect(density, aabb, cfg.visibility_resolution)


def light_transport(model) -> LightTransport:
    """The visibility terms of the shading: the SH grid, and the shadow density with ``rays``
    (splatted again from the current Gaussians when a loaded model has none)."""
    cfg = model.config
    shadows = None
    if cfg.visibility == "rays" and model.visibility is not None:
        if model.shadow_density is None:
            g = model.gaussians.activated()
            with torch.no_grad():
                model.shadow_density = splat_gaussians(
                    g.means, g.quats, g.scales, g.opacities, model.visibility.aabb, cfg.shadow_resolution
                )
        shadows = model.shadow_density
    return LightTransport(model.visibility, shadows, cfg.shadow_lights, cfg.shadow_min_share)


def gaussian_features(model, normals: Tensor) -> Dict[str, Tensor]:
    """Per-Gaussian channels to splat with the G-buffers: ``indirect_sh`` [N,3] (irradiance of the
    learned SH along each Gaussian's ``normals`` [N,3], unclamped) with ``gaussian-sh`` once the
    volume is baked."""
    if model.config.indirect != "gaussian-sh" or model.indirect_volume is None:
        return {}
    return {INDIRECT_GBUFFER: gaussian_sh_irradiance(model.gaussians.params[INDIRECT_PARAM], normals)}


def indirect_irradiance(
    model, splatted: Optional[Tensor], points: Tensor, normal: Tensor, light
) -> tuple[Optional[Tensor], Optional[Tensor]]:
    """(E_ind, E_volume) [H,W,3], linear: the indirect irradiance the shading adds (None without
    indirect light) and the volume's at the same pixels (the ``gaussian-sh`` regulariser's target).
    ``splatted``: the straight ``indirect_sh`` G-buffer (``gaussian-sh``); ``light``: the shading light."""
    cfg = model.config
    if cfg.indirect == "none" or model.indirect_volume is None:
        return None, None
    target = model.indirect_volume.irradiance(points, normal)
    irradiance = splatted.clamp(min=0.0) if cfg.indirect == "gaussian-sh" else target
    if light is not model.light:
        if cfg.indirect_relight == "drop":
            return None, target
        irradiance = irradiance * relight_scale(model.light, light)
    return irradiance, target


def indirect_loss(model, outputs: Dict[str, Tensor]) -> Optional[Tensor]:
    """``indirect_weight * |E_splat - E_volume|`` (premultiplied by the coverage, the splat
    unclamped) summed over pixels and channels' mean, over the coverage: ``gaussian-sh`` only, None
    when it does not apply (before the volume is baked)."""
    cfg = model.config
    if cfg.indirect != "gaussian-sh" or cfg.indirect_weight <= 0 or INDIRECT_GBUFFER not in outputs:
        return None
    acc = outputs["accumulation"].detach()
    target = acc * outputs["indirect_target"].detach()
    error = (outputs[INDIRECT_GBUFFER] - target).abs().mean(-1)
    return cfg.indirect_weight * error.sum() / acc.sum().clamp(min=1.0)


def save_state(model, destination: dict, prefix: str) -> None:
    if model.indirect_volume is not None:
        destination[prefix + "indirect_coeffs"] = model.indirect_volume.coeffs
        destination[prefix + "indirect_aabb"] = model.indirect_volume.aabb


def load_state(model, state_dict: dict) -> None:
    """Take the indirect volume out of ``state_dict`` (in place) into the model."""
    coeffs = state_dict.pop("indirect_coeffs", None)
    aabb = state_dict.pop("indirect_aabb", None)
    if coeffs is not None and aabb is not None:
        model.indirect_volume = IndirectVolume(coeffs.to(model.device), aabb.to(model.device))
    model.shadow_density = None
