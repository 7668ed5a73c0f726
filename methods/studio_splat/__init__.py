"""``ns-train studio-splat``: 3D Gaussian Splatting reconstruction (Kerbl et al. 2023)."""
