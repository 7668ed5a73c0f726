"""``ns-train prd``: Progressive Radiance Distillation inverse rendering (wiring only)."""
