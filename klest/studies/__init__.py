"""Studies: TOML config -> validated frozen dataclasses -> runs -> tidy DataFrame, kept in a
results store; the RL studies' frames.

Imports the RL layer (``rl``, ``gradients``, ``sequence``) and everything below; never ``report``.
"""
