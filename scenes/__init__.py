"""Bundled scenes and reference images (package data)."""
