"""Test-wide settings.

Hypothesis runs derandomized: the examples are a fixed function of each test, so CI sees the
same inputs on every run (DESIGN.md: fixed seeds; a failure is a bug to fix, not a flake).
Run `pytest --hypothesis-profile=explore` to search new examples locally.
"""

from hypothesis import settings

settings.register_profile("default", derandomize=True, deadline=None)
settings.register_profile("explore", derandomize=False, deadline=None, max_examples=500)
settings.load_profile("default")
