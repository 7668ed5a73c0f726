"""Method presets (tiny / full) as YAML package data; see studio.models.presets."""
