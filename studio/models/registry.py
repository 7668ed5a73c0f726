"""The registered methods: the ``nerfstudio.method_configs`` entry points of ``pyproject.toml``.

Lists of methods (the tests', the viewer's, ``studio eval``'s) come from here, so a new method
joins them by its entry-point line. Capabilities are read off the registered configs: a method is
an inverse-rendering one when its model can relight (``render_relit``), an image-to-3D one when
its data manager takes one reference image (``ReferenceDataManagerConfig``), a sparse-view one when it
takes 2-3 posed views (``SparseViewDataManagerConfig``), a text-to-3D one when
its model takes a ``prompt`` and its data manager is an orbit one without a reference image.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any, Dict, List


def registered_methods() -> Dict[str, Any]:
    """Name -> ``MethodSpecification`` of every method in the ``studio.methods`` namespace."""
    out = {}
    for ep in entry_points(group="nerfstudio.method_configs"):
        if ep.value.startswith("studio.methods."):
            out[ep.name] = ep.load()
    return out


def registered_config(method: str) -> Any:
    """The TrainerConfig that ``method`` registers, or None for an unknown name (loads only its module)."""
    for ep in entry_points(group="nerfstudio.method_configs"):
        if ep.name == method and ep.value.startswith("studio.methods."):
            return ep.load().config
    return None


def _model_class(config: Any) -> type:
    return config.pipeline.model._target


def relighting_methods() -> List[str]:
    """Methods whose models relight (PBR inverse rendering): ``studio eval prd``, the viewer's PBR channels."""
    return sorted(n for n, s in registered_methods().items() if hasattr(_model_class(s.config), "render_relit"))


def image_to_3d_methods() -> List[str]:
    """Methods that reconstruct from one reference image: ``studio eval image-to-3d --method``."""
    from studio.data.reference import ReferenceDataManagerConfig

    return sorted(
        n
        for n, s in registered_methods().items()
        if isinstance(s.config.pipeline.datamanager, ReferenceDataManagerConfig)
    )


def sparse_view_methods() -> List[str]:
    """Methods that reconstruct from 2-3 posed views (a ``SparseViewDataManagerConfig``): what ``studio eval
    sparse-view`` runs (its ``--method sds`` is the baseline of such a method, not the text-to-3D ``sds``)."""
    from studio.data.sparse_views import SparseViewDataManagerConfig

    return sorted(
        n
        for n, s in registered_methods().items()
        if isinstance(s.config.pipeline.datamanager, SparseViewDataManagerConfig)
    )


def text_to_3d_methods() -> List[str]:
    """Methods that generate from a prompt alone (no ``--data``): ``studio eval text-to-3d --method``."""
    from studio.data.orbit import OrbitDataManagerConfig
    from studio.data.reference import ReferenceDataManagerConfig

    return sorted(
        n
        for n, s in registered_methods().items()
        if hasattr(s.config.pipeline.model, "prompt")
        and isinstance(s.config.pipeline.datamanager, OrbitDataManagerConfig)
        and not isinstance(s.config.pipeline.datamanager, ReferenceDataManagerConfig)
    )
