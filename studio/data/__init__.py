"""Dataset readers: format detection, NeRF-synthetic and Nerfstudio transforms, validation.

``studio.data.dataparser`` adapts them to Nerfstudio (imported separately: it imports Nerfstudio).
"""

from studio.data.formats import DatasetFormat, detect_format, validate_dataset
from studio.data.nerf_synthetic import FrameSet, read_nerf_synthetic

__all__ = ["DatasetFormat", "FrameSet", "detect_format", "read_nerf_synthetic", "validate_dataset"]
