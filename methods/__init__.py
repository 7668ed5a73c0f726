"""Nerfstudio methods (installed as ``studio.methods``): one folder per method with its config,
model, stages and README; what several methods share lives in ``studio``."""
