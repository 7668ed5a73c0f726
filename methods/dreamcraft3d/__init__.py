"""``ns-train dreamcraft3d``: hierarchical image-to-3D with Bootstrapped Score Distillation."""
