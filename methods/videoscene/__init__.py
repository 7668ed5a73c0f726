"""VideoScene: one-step video-diffusion-to-3D with leap-flow distillation and a leap-timestep policy."""
