"""The PCG64 states of klest stream v1's blocks, computed directly and many blocks at once.

Block k of case c draws from ``Generator(PCG64(SeedSequence(seed, spawn_key=(c, k))))``
(:func:`klest.engine.plan.block_generator`). Building that generator and reading its state
back through ``bit_generator.state`` cost ~40-90 us a block, most of it Python around NumPy's
SeedSequence; the engine's compiled passes only need the (B, 4) uint64 states. Here NumPy's
algorithms are written out: SeedSequence's entropy assembly, ``mix_entropy`` and
``generate_state`` (O'Neill's seed_seq hash, numpy/random/bit_generator.pyx), vectorised over
the blocks of a task, then PCG64's seeding (``pcg64_set_seed``: the LCG's ``srandom``).
Blocks whose spawn key is not two 32-bit words (a case or block index >= 2**32) go through
NumPy's own SeedSequence. tests/test_seeding.py checks the states against NumPy's, so a
change in NumPy's seeding would be seen there.

>>> from klest.engine.plan import block_generator
>>> state = block_generator(7, 1, 5).bit_generator.state["state"]["state"]
>>> row = block_states(7, 1, range(5, 6))[0]
>>> (int(row[0]) << 64 | int(row[1])) == state
True
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["block_states"]

_POOL = 4  # SeedSequence's default pool size (32-bit words)
_INIT_A, _MULT_A = 0x43B0D7E5, 0x931E8875
_INIT_B, _MULT_B = 0x8B51F9DD, 0x58F38DED
_MIX_L, _MIX_R = 0xCA01F9DD, 0x4973F715
_XSHIFT = 16
_WORD = 2**32
_MASK128 = (1 << 128) - 1
_PCG64_MULTIPLIER = (2549297995355413924 << 64) | 4865540595714422341


def block_states(seed: int, case: int, blocks: Sequence[int]) -> np.ndarray:
    """The (B, 4) uint64 PCG64 states [state_hi, state_lo, inc_hi, inc_lo] of
    ``block_generator(seed, case, k)`` for each k of ``blocks`` (what
    :func:`klest.native.pcg64_states` reads from those generators)."""
    blocks = [int(k) for k in blocks]
    words = np.empty((len(blocks), 4), dtype=np.uint64)
    one_word = np.array([0 <= k < _WORD for k in blocks], dtype=bool)
    if 0 <= case < _WORD and one_word.any():
        entropy = _words(seed)
        prefix = [*entropy, *[0] * (_POOL - len(entropy)), case]
        keys = np.array([k for k, short in zip(blocks, one_word, strict=True) if short])
        words[one_word] = _generate_state(prefix, keys.astype(np.uint32))
    else:
        one_word[:] = False
    for i in np.flatnonzero(~one_word):
        sequence = np.random.SeedSequence(seed, spawn_key=(case, blocks[i]))
        words[i] = sequence.generate_state(4, np.uint64)
    return np.array([_seeded(*row) for row in words.tolist()], dtype=np.uint64).reshape(-1, 4)


def _words(n: int) -> list[int]:
    """SeedSequence's 32-bit words of a non-negative int, least significant first ([0] for 0)."""
    out = [n % _WORD]
    n //= _WORD
    while n:
        out.append(n % _WORD)
        n //= _WORD
    return out


def _generate_state(prefix: list[int], last: np.ndarray) -> np.ndarray:
    """SeedSequence(entropy).generate_state(4, uint64) for the entropy arrays prefix + [x],
    x each entry of ``last``. Everything before x enters the pool the same way for every
    block: that part is hashed once, in Python ints; x's mixing and the output hash run in
    wrapping uint32 arrays over the blocks."""
    mask = _WORD - 1
    hash_const = _INIT_A

    def hashmix(value: int) -> int:
        nonlocal hash_const
        value ^= hash_const
        hash_const = hash_const * _MULT_A & mask
        value = value * hash_const & mask
        return value ^ value >> _XSHIFT

    def mix(x: int, y: int) -> int:
        result = (_MIX_L * x - _MIX_R * y) & mask
        return result ^ result >> _XSHIFT

    pool = [hashmix(prefix[i]) for i in range(_POOL)]
    for src in range(_POOL):
        for dst in range(_POOL):
            if src != dst:
                pool[dst] = mix(pool[dst], hashmix(pool[src]))
    for word in prefix[_POOL:]:
        for dst in range(_POOL):
            pool[dst] = mix(pool[dst], hashmix(word))
    rows = []
    for dst in range(_POOL):  # the last word, hashed with this step's constant, per block
        value = last ^ np.uint32(hash_const)
        hash_const = hash_const * _MULT_A & mask
        value = value * np.uint32(hash_const)
        value ^= value >> np.uint32(_XSHIFT)
        result = np.uint32(_MIX_L * pool[dst] & mask) - np.uint32(_MIX_R) * value
        rows.append(result ^ (result >> np.uint32(_XSHIFT)))
    hash_b = _INIT_B
    out = np.empty((last.size, 8), dtype=np.uint32)
    for i in range(8):
        value = rows[i % _POOL] ^ np.uint32(hash_b)
        hash_b = hash_b * _MULT_B & mask
        value = value * np.uint32(hash_b)
        out[:, i] = value ^ (value >> np.uint32(_XSHIFT))
    return out.astype("<u4").view("<u8")


def _seeded(seed_hi: int, seed_lo: int, inc_hi: int, inc_lo: int) -> list[int]:
    """PCG64's state after ``pcg64_set_seed`` with these words: inc = 2 initseq + 1, then
    state = ((0 + inc) + initstate) * multiplier + inc (mod 2**128)."""
    inc = (((inc_hi << 64) | inc_lo) << 1 | 1) & _MASK128
    state = (inc + ((seed_hi << 64) | seed_lo)) & _MASK128
    state = (state * _PCG64_MULTIPLIER + inc) & _MASK128
    return [state >> 64, state & (2**64 - 1), inc >> 64, inc & (2**64 - 1)]
