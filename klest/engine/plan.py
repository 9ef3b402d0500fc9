"""What determines a run's numbers: its plan, the block seeding and the task layout.

A run of n draws of case c is cut into blocks of ``block_size`` draws; block k draws from
``default_rng(SeedSequence(seed, spawn_key=(c, k)))`` (:func:`block_generator`, DESIGN.md's
seeding scheme). Blocks are grouped into tasks of :data:`BLOCKS_PER_TASK` blocks
(:meth:`RunPlan.tasks`), so the merge tree depends on (n, block size) only, never on the
workers that run the tasks.

>>> plan = RunPlan(None, None, ("k1",), n=100, seed=0, case=0, block_size=30, edges=None)
>>> plan.n_blocks, plan.block_length(3), plan.tasks()
(4, 10, [(0, 4)])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from klest.distributions.base import Distribution

__all__ = ["BLOCKS_PER_TASK", "RunPlan", "block_generator"]

BLOCKS_PER_TASK = 16  # fixed: part of what makes results independent of the worker count


@dataclass(frozen=True)
class RunPlan:
    """Everything a worker needs to run blocks of one case (picklable)."""

    q: Distribution
    p: Distribution
    estimators: tuple[str, ...]
    n: int
    seed: int
    case: int
    block_size: int
    edges: np.ndarray | None

    @property
    def n_blocks(self) -> int:
        return -(-self.n // self.block_size)

    def block_length(self, k: int) -> int:
        return min(self.block_size, self.n - k * self.block_size)

    def tasks(self) -> list[tuple[int, int]]:
        """(first block, block count) of each task, in merge order."""
        return [
            (first, min(BLOCKS_PER_TASK, self.n_blocks - first))
            for first in range(0, self.n_blocks, BLOCKS_PER_TASK)
        ]


def block_generator(seed: int, case: int, block: int) -> np.random.Generator:
    """The generator of block ``block`` of case ``case`` (DESIGN.md's seeding scheme)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(case, block)))
