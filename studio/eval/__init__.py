"""Evaluation commands' scoring: inverse rendering (``inverse``), image-to-3D (``image_to_3d``) and
the ToyWorld attribute classifier (``classifier``: category, colour, material of an image; a
measuring instrument, never a training signal); image metrics are ``studio.metrics``."""
