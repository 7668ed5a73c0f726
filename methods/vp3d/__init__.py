"""``ns-train vp3d``: text-to-3D with a 2D visual prompt, visual-prompted SDS and rewards (VP3D)."""
