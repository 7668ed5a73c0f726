"""Small I/O helpers shared by every command: atomic writes and the restricted config loader."""

from studio.io.atomic import atomic_path, atomic_write_bytes, atomic_write_text
from studio.io.errors import StudioInputError

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "StudioInputError"]
