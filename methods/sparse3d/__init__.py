"""``ns-train sparse3d``: sparse-view reconstruction with a multiview-consistent prior and C-SDS (Sparse3D)."""
