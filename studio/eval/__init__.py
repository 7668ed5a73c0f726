"""Evaluation commands' scoring: inverse rendering (``inverse``) and image-to-3D (``image_to_3d``);
image metrics are ``studio.metrics``."""
