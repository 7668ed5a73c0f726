"""Model bases shared by the methods (Nerfstudio ``Model`` subclasses), the trainer with presets,
the staged-model base, optimiser tables and the loader of trained runs.

Layer: above rendering, priors and guidance; below export, eval, the CLI, the viewer and
``studio.methods`` (which hold everything specific to one method).
"""
