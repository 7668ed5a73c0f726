"""Nerfstudio integration shared by every method: trainer config with presets, restricted loading."""
