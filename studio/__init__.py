"""Distill Studio: 3D generation and inverse rendering built on distillation.

Library layout (one concept per subpackage): ``cameras``, ``data``, ``render``, ``gaussians``,
``export``, ``eval``, ``io``, ``cli``. Nerfstudio methods live in ``studio.methods`` and the viser
app in ``studio.viewer``.
"""

__version__ = "0.1.0"
