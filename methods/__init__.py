"""Nerfstudio methods (installed as ``studio.methods``); each folder only wires library pieces."""
