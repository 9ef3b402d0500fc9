"""The Categorical engine's fast path stays safe: the inverse CDF's O(K) value checks run once
per (cdf, guide) pair only for arrays that nothing can change, any other table is checked on
every call (and refused when it is wrong), and pickling ships the exact arrays.

Behaviour only (no timing): benchmarks/bench_engine.py measures the speed.
"""

from __future__ import annotations

import copy
import pickle
import warnings

import numpy as np
import pytest

import klest
from klest import native as _native
from klest.distributions.log_ratio import log_ratio_function, sample_log_ratio
from klest.native import checks, fallback


def categorical(k: int = 64, seed: int = 0) -> klest.Categorical:
    return klest.Categorical(logits=np.random.default_rng(seed).standard_normal(k) * 2.0)


def test_a_categoricals_arrays_can_never_be_made_writable_again() -> None:
    q = klest.Categorical(probs=[0.1, 0.2, 0.3, 0.4])
    b = klest.Categorical(logits=[[0.0, 1.0], [2.0, -np.inf]])
    arrays = [q._cdf, q._guide, q.log_probs, q.probs, q._params["probs"], b.log_probs, b._cdf]
    sums_below_one = klest.Categorical(probs=[0.7, 0.2, 0.1])  # by 1 ulp: probs = exp(log_probs)
    arrays += [b.probs, b._params["logits"], sums_below_one.probs]
    arrays.append(q.log_ratio_table(categorical(4)))
    for array in arrays:
        assert checks.cannot_change(array)
        with pytest.raises(ValueError, match="WRITEABLE"):
            array.flags.writeable = True


def test_cannot_change_is_false_for_anything_a_caller_could_write() -> None:
    locked = np.linspace(0.25, 1.0, 4)
    locked.flags.writeable = False  # its owner can set writeable=True again
    writable_base = np.frombuffer(bytearray(32))  # a view of a mutable buffer
    view_of_writable = np.arange(4.0)[1:]
    view_of_writable.flags.writeable = False
    frozen = categorical()._cdf
    for array in (locked, writable_base, view_of_writable, frozen.copy(), list(frozen)):
        assert not checks.cannot_change(array)
    assert checks.cannot_change(frozen[2:]) and checks.cannot_change(frozen.reshape(2, -1))


@pytest.mark.parametrize("module", [_native, fallback], ids=["in-use", "fallback"])
def test_a_checked_table_mutated_in_a_writable_copy_is_still_refused(module: object) -> None:
    q = categorical(64)
    u = np.array([0.1, 0.7])
    module.inverse_cdf(q._cdf, q._guide, u)  # checked and remembered
    cdf, guide = q._cdf.copy(), q._guide.copy()
    module.inverse_cdf(cdf, guide, u)  # writable copies: fine today ...
    guide[5] = 10_000  # ... and wrong after a write: checked again, refused
    with pytest.raises(ValueError, match="guide entries must be categories"):
        module.inverse_cdf(cdf, guide, u)
    guide[5] = q._guide[5]
    cdf[-1] = 0.5
    with pytest.raises(ValueError, match=r"ending in 1\.0"):
        module.inverse_cdf(cdf, guide, u)


def test_a_read_only_table_that_its_owner_can_unlock_is_checked_every_call() -> None:
    q = categorical(64)
    u = np.array([0.3])
    guide = q._guide.copy()
    guide.flags.writeable = False
    _native.inverse_cdf(q._cdf, guide, u)
    guide.flags.writeable = True
    guide[0] = -1
    guide.flags.writeable = False
    with pytest.raises(ValueError, match="guide entries must be categories"):
        _native.inverse_cdf(q._cdf, guide, u)


def test_only_frozen_pairs_that_passed_are_remembered() -> None:
    q = categorical(64)
    u = np.array([0.5])
    _native.inverse_cdf(q._cdf, q._guide, u)
    assert checks._checked_before(q._cdf, q._guide)
    assert not checks._checked_before(q._cdf, q._guide.copy())  # another object
    other = categorical(32, seed=1)
    assert not checks._checked_before(q._cdf, other._guide)  # another pair
    with pytest.raises(ValueError, match="guide entries must be categories"):
        _native.inverse_cdf(other._cdf, q._guide, u)  # q's guide indexes past other's cdf
    assert not checks._checked_before(other._cdf, q._guide)
    with pytest.raises(ValueError, match=r"ending in 1\.0"):
        _native.inverse_cdf(q._cdf[:-1], q._guide, u)  # a frozen view, but a wrong cdf
    assert not checks._checked_before(q._cdf[:-1], q._guide)


def test_a_remembered_pair_still_gets_its_layout_and_its_other_arguments_checked() -> None:
    q = categorical(64)
    cdf, guide = q._cdf, q._guide
    _native.inverse_cdf(cdf, guide, np.array([0.5]))
    assert checks._checked_before(cdf, guide)
    half = np.array([0.5])
    cases = [
        (lambda: _native.inverse_cdf(cdf, guide, np.array([0.5, 1.0])), ValueError, "index 1"),
        (lambda: _native.inverse_cdf(cdf, guide, half.astype(np.float32)), TypeError, "u must"),
        (lambda: _native.inverse_cdf(cdf, guide, half, np.zeros(3)), ValueError, "table must"),
    ]  # fmt: skip
    for call, error, match in cases:
        with pytest.raises(error, match=match):
            call()
    retyped = guide.view()  # the same frozen buffer, re-typed in place
    _native.inverse_cdf(cdf, retyped, np.array([0.5]))
    try:  # NumPy may one day refuse to re-type an array in place: then nothing to check
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            retyped.dtype = np.int16  # type: ignore[misc]
    except (AttributeError, TypeError, ValueError):
        return
    with pytest.raises(TypeError, match="guide must have dtype int32"):
        _native.inverse_cdf(cdf, retyped, np.array([0.5]))


def test_pickling_ships_the_exact_arrays_and_tables() -> None:
    for q in (categorical(1000), klest.Categorical(probs=[0.2, 0.0, 0.3, 0.5])):
        assert q._guide.size > 1  # the tables are built: they travel with it
        for back in (pickle.loads(pickle.dumps(q)), copy.deepcopy(q)):
            assert back == q and hash(back) == hash(q) and back.to_dict() == q.to_dict()
            assert back.log_probs.tobytes() == q.log_probs.tobytes()
            assert "_cdf" in back.__dict__ and "_guide" in back.__dict__
            assert back._cdf.tobytes() == q._cdf.tobytes()
            assert back._guide.tobytes() == q._guide.tobytes()
            for array in (back._cdf, back._guide, back.log_probs, *back._params.values()):
                assert checks.cannot_change(array)
            u = np.random.default_rng(5).random(5000)
            assert np.array_equal(back.inverse_cdf(u), q.inverse_cdf(u))
    plain = pickle.loads(pickle.dumps(categorical(10)))  # tables not built: built on demand
    assert "_cdf" not in plain.__dict__
    assert np.array_equal(plain._cdf, categorical(10)._cdf)


def test_pickle_keeps_the_parameterisation_and_batch() -> None:
    b = klest.Categorical(logits=[[0.0, 1.0, -np.inf], [2.0, 0.5, 0.1]])
    back = pickle.loads(pickle.dumps(b))
    assert back.to_dict() == b.to_dict() and back.batch_shape == (2,)
    assert np.array_equal(back.log_probs, b.log_probs)
    x = np.array([[0, 2], [1, 1]])
    assert np.array_equal(back.log_prob(x), b.log_prob(x))


def test_log_ratio_table_is_the_generic_difference_and_is_kept_for_the_same_p() -> None:
    q = categorical(500)
    logits = np.random.default_rng(4).standard_normal(500)
    logits[::9] = -np.inf
    p = klest.Categorical(logits=logits)
    table = q.log_ratio_table(p)
    want = log_ratio_function(q, p)(np.arange(500.0))
    assert table.tobytes() == want.tobytes()
    assert q.log_ratio_table(p) is table
    other = categorical(500, seed=7)
    assert q.log_ratio_table(other) is not table
    assert q.log_ratio_table(other).tobytes() == (other.log_probs - q.log_probs).tobytes()
    fused = q.inverse_cdf(np.random.default_rng(3).random(20_000), table=q.log_ratio_table(p))
    assert fused.tobytes() == sample_log_ratio(q, p, np.random.default_rng(3), 20_000).tobytes()
    with pytest.raises(ValueError, match="p has 3 categories"):
        q.log_ratio_table(categorical(3))
    with pytest.raises(ValueError, match="unbatched"):
        q.log_ratio_table(klest.Categorical(logits=np.zeros((2, 500))))


def test_the_engine_gives_the_same_bits_in_one_process_and_in_a_pool() -> None:
    q = categorical(4096)
    p = klest.Categorical(logits=q.logits + 0.3 * np.random.default_rng(2).standard_normal(4096))
    kwargs = dict(n=40_000, seed=3, block_size=2_000, exact=False, progress=False)
    one = klest.simulate(q, p, ["k1", "k3"], **kwargs).to_frame()
    two = klest.simulate(q, p, ["k1", "k3"], workers=2, **kwargs).to_frame()
    assert one.equals(two)
