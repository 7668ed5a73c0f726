"""``flashworld``: FlashWorld (one-step 3D Gaussian scene generation by dual-mode pre-training and cross-mode distillation)."""
