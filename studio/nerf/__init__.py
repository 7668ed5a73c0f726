"""Neural radiance fields for generation (the NeRF option of ``sds``): a hash-grid field with a
density blob (``field``) and volume rendering of its rays (``volume``)."""

from studio.nerf.field import HashGridField, HashGridFieldConfig
from studio.nerf.volume import composite, render_cameras, render_rays, sphere_bounds

__all__ = ["HashGridField", "HashGridFieldConfig", "composite", "render_cameras", "render_rays", "sphere_bounds"]
