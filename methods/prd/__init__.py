"""``ns-train prd``: Progressive Radiance Distillation inverse rendering (Ye et al. 2024)."""
