"""Method presets (tiny / full) as YAML package data; see studio.engine.presets."""
