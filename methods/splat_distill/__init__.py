"""``splat-distill``: Splat and Distill (3D-aware distillation of 2D features through feed-forward Gaussians)."""
