"""One-step 3D generators (FlashWorld): networks that turn an image or a caption, plus cameras,
into 3D Gaussians, and their training data."""
