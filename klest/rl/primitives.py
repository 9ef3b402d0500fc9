"""A framework's per-token KL term as declarative data: a few primitives, one evaluator.

Every (framework, version, kind) that :func:`klest.rl.kl_penalty` mirrors is a
:class:`PenaltySpec` built from these primitives, applied in this order:

1. the log-ratio ``l = ref_logprob - logprob`` (klest's log p - log q), optionally
   clamped to ``[-input_clamp, input_clamp]`` (``torch.clamp``: zero gradient outside);
2. an **estimator** of the (clamped) log-ratio: ``k1 = -l``, ``k2 = l²/2``,
   ``k3 = e^l - 1 - l`` (stable: ``expm1(l) - l`` and its series near 0), ``abs = |l|``,
   ``sq = l²`` (prime-rl's penalty, no ½), ``k3_swapped = e^{-l} - 1 + l`` (k3 with the roles
   of the two policies swapped: prime-rl's ``mismatch_kl``), ``pi_k1_sum`` (EasyR1's
   ``full``: Σ over the last axis of π(a)·(log π(a) - log π_ref(a)) at the sampled tokens),
   or ``full`` (the exact full-vocabulary KL);
3. an optional importance **weight** ρ (:class:`Weight`): built from the behaviour
   policy's log-probabilities passed in the option the framework uses
   (``old_logprob``, ``generation_logprob``, ...), detached or differentiable, per token or
   as a sequence mean, applied before or after the output clamp;
4. an optional **output clamp** to ``[-output_clamp, output_clamp]`` (value clamped,
   gradient 0 where active, evaluated so that no ``0 * inf`` reaches the gradient);
5. optionally a **straight-through** gradient (``gradient_of``: the value of the kind,
   the gradient of another estimator of the unclamped log-ratio), or **detached** (a value
   computed without gradient: the KL placed in the reward).

Where the penalty sits (loss / reward / advantages / metric), how it is reduced (token mean,
sequence mean, ...), the dtype the framework computes in and the exact source lines are
recorded on the spec as metadata: :func:`klest.rl.describe` reports them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from klest.rl._backend import log_ratio_estimator

__all__ = ["ESTIMATORS", "LEVELS", "PLACEMENTS", "PenaltySpec", "Site", "Weight", "evaluate"]

#: estimator name -> (value k as a formula in l, d k / d logprob, k + d k / d logprob)
ESTIMATORS: Mapping[str, tuple[str, str, str]] = {
    "k1": ("-l", "1", "1 - l"),
    "k2": ("l**2 / 2", "-l", "l**2 / 2 - l"),
    "k3": ("exp(l) - 1 - l", "1 - exp(l)", "-l"),
    "abs": ("|l|", "-sign(l)", "|l| - sign(l)"),
    "sq": ("l**2", "-2 l", "l**2 - 2 l"),
    "k3_swapped": ("exp(-l) - 1 + l", "exp(-l) - 1", "2 exp(-l) - 2 + l"),
    "pi_k1_sum": (
        "sum over the last axis of exp(logprob) (logprob - ref_logprob)",
        "exp(logprob) (1 - l) at each position",
        "",
    ),
    "full": ("sum_v pi(v) (log pi(v) - log pi_ref(v))", "exact gradient of KL(pi||pi_ref)", ""),
}
PLACEMENTS = ("loss", "reward", "advantages", "metric")
LEVELS = ("token", "sequence_sum", "sequence_mean")


@dataclass(frozen=True)
class Site:
    """Where a framework's code lives at the pinned commit: file, function, line range."""

    file: str
    function: str
    lines: str
    call: str = ""  # where the framework applies it (weights, coefficient), if elsewhere

    def __str__(self) -> str:
        text = f"{self.file}::{self.function} (lines {self.lines})"
        return f"{text}; applied in {self.call}" if self.call else text


@dataclass(frozen=True)
class Weight:
    """An importance weight w multiplying the estimator.

    ``option`` names the keyword through which the framework receives the behaviour
    policy's log-probabilities μ; w = exp(logprob - μ), or the exponentiated sum
    (``level="sequence_sum"``: the sequence's ratio) or mean (``"sequence_mean"``, GSPO) of
    logprob - μ over the last axis, the same w for every token. When the option is not given,
    ``missing="none"`` means no weight and ``missing="self"`` means
    w = exp(logprob - stop_gradient(logprob)): 1 in value, d w/d logprob = 1.

    - ``gradient``: "differentiable" or "detached".
    - ``order``: "before_clamp" (the output clamp acts on w · k) or "after_clamp" (w · clamp(k)).
    - ``nonfinite_to_zero``: a non-finite weight becomes 0 (``torch.nan_to_num``); klest's
      gradient there is 0, the derivative of the constant it was replaced by.
    - ``detach_where_clamped``: the weight is detached where the input clamp is active.
    - ``ratio_option``: a keyword taking the weight itself (used as given), exclusive with
      ``option``.
    - ``switch``: a boolean keyword that turns the weight on (off by default unless
      ``switch_default``); the behaviour option without it is an error, not ignored.
    - ``option_switch``: a boolean keyword (default False) without which the behaviour
      option is not used: the weight is then what ``missing`` says (NeMo-RL's
      ``use_on_policy_kl_approximation``).
    - ``level_option``: a keyword choosing ``level`` per call ("token" / "sequence"),
      with a ``mask`` keyword for the sequence mean.
    - ``truncate``: truncated importance sampling (TIS): w -> min(w, truncate).
    - ``mask_range``: masked importance sampling (MIS, IcePop): w -> 0 where w lies outside
      ``[low, high]``.
    """

    option: str
    gradient: str = "differentiable"
    missing: str = "none"
    level: str = "token"
    order: str = "before_clamp"
    nonfinite_to_zero: bool = False
    detach_where_clamped: bool = False
    ratio_option: str | None = None
    switch: str | None = None
    switch_default: bool = False
    option_switch: str | None = None
    level_option: str | None = None
    truncate: float | None = None
    mask_range: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        checks = (
            ("gradient", self.gradient, ("differentiable", "detached")),
            ("missing", self.missing, ("none", "self")),
            ("level", self.level, LEVELS),
            ("order", self.order, ("before_clamp", "after_clamp")),
        )
        for name, value, valid in checks:
            if value not in valid:
                raise ValueError(f"Weight.{name} must be one of {valid}, got {value!r}")
        if self.truncate is not None and not (0 < self.truncate < float("inf")):
            raise ValueError(f"Weight.truncate must be a positive number, got {self.truncate!r}")
        if self.mask_range is not None:
            low, high = self.mask_range
            if not (0 <= low <= high < float("inf")):
                raise ValueError(
                    f"Weight.mask_range must be (low, high) with 0 <= low <= high, "
                    f"got {self.mask_range!r}"
                )

    def options(self) -> dict[str, Any]:
        out: dict[str, Any] = {self.option: None}
        if self.ratio_option:
            out[self.ratio_option] = None
        if self.switch:
            out[self.switch] = self.switch_default
        if self.option_switch:
            out[self.option_switch] = False
        if self.level_option:
            out[self.level_option] = "token"
            out["mask"] = None
        return out

    def array_options(self) -> frozenset[str]:
        names = {self.option, self.ratio_option, "mask" if self.level_option else None}
        return frozenset(n for n in names if n)

    def describe(self) -> str:
        mu = f"exp(logprob - {self.option})"
        if self.level == "sequence_sum":
            mu = f"exp(sum over the sequence of logprob - {self.option})"
        elif self.level == "sequence_mean":
            mu = f"exp(mean over the sequence of logprob - {self.option})"
        elif self.level_option:
            mu += " (or exp of its mean over the sequence: level 'sequence')"
        text = f"w = {mu}, {self.gradient}"
        if self.missing == "self":
            text += f"; without {self.option}: exp(logprob - stop_gradient(logprob))"
        else:
            text += f"; without {self.option}: w = 1"
        if self.ratio_option:
            text += f"; or {self.ratio_option}= as given"
        if self.switch:
            text += f"; only if {self.switch}=True (default {self.switch_default})"
        if self.option_switch:
            text += f"; {self.option} is used only if {self.option_switch}=True"
        if self.nonfinite_to_zero:
            text += "; non-finite w -> 0"
        if self.detach_where_clamped:
            text += "; detached where the input clamp is active"
        if self.truncate is not None:
            text += f"; truncated at {self.truncate:g} (TIS)"
        if self.mask_range is not None:
            text += f"; 0 outside [{self.mask_range[0]:g}, {self.mask_range[1]:g}] (MIS)"
        return text


@dataclass(frozen=True)
class PenaltySpec:
    """One framework release's per-token KL term (see the module docstring)."""

    framework: str
    version: str
    kind: str
    estimator: str
    site: Site
    placement: str
    reduction: str = "token"
    input_clamp: float | None = None
    output_clamp: float | None = None
    weight: Weight | None = None
    gradient_of: str | None = None
    detached: bool = False
    dtype: str = "input dtype"
    clamp_options: tuple[str, str] | None = None
    anchor: str = "ref_logprob"
    unsupported: str | None = None
    note: str = ""
    aliases: tuple[str, ...] = ()
    fn: Callable[..., Any] | None = field(default=None, repr=False, compare=False)
    extra_options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"unknown estimator {self.estimator!r}; valid: {tuple(ESTIMATORS)}")
        if self.gradient_of is not None and self.gradient_of not in ESTIMATORS:
            raise ValueError(f"unknown gradient_of {self.gradient_of!r}")
        if self.placement.split(" ")[0] not in PLACEMENTS:
            raise ValueError(f"placement must start with one of {PLACEMENTS}: {self.placement!r}")
        if self.estimator == "full" and self.fn is None:
            raise ValueError("a 'full' spec needs fn (it takes the raw inputs)")

    @property
    def raw(self) -> bool:
        """The inputs go to ``fn`` untouched (the ``full`` kinds chunk large logits)."""
        return self.estimator == "full"

    @property
    def options(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra_options)
        if self.clamp_options:
            out[self.clamp_options[0]] = self.input_clamp
            out[self.clamp_options[1]] = self.output_clamp
        if self.weight is not None:
            out.update(self.weight.options())
        return out

    @property
    def array_options(self) -> frozenset[str]:
        return frozenset() if self.weight is None else self.weight.array_options()

    def formula(self) -> str:
        """The value, written out from the primitives."""
        value = ESTIMATORS[self.estimator][0]
        if self.raw:
            return value
        text = value.replace("l", "c") if self.input_clamp is not None else value
        if self.weight is not None and self.weight.order == "before_clamp":
            text = f"w * ({text})"
        if self.output_clamp is not None:
            text = f"clamp({text}, -{self.output_clamp:g}, {self.output_clamp:g})"
        if self.weight is not None and self.weight.order == "after_clamp":
            text = f"w * {text}"
        where = [f"l = {self.anchor} - logprob"]
        if self.input_clamp is not None:
            where.append(f"c = clamp(l, -{self.input_clamp:g}, {self.input_clamp:g})")
        if self.weight is not None:
            where.append(self.weight.describe())
        return f"{text}; " + "; ".join(where)

    def gradient(self) -> str:
        """d value / d logprob, written out from the primitives."""
        if self.detached:
            return "none (detached: computed without gradient)"
        if self.raw:
            return ESTIMATORS["full"][1]
        if self.gradient_of is not None:
            d = ESTIMATORS[self.gradient_of][1]
            return (
                f"d/d logprob = {d} ({self.gradient_of}'s gradient, straight-through: "
                "unclamped l, whatever the value's clamps)"
            )
        d = ESTIMATORS[self.estimator][1]
        if self.weight is None:
            text = f"d/d logprob = {d}"
        elif self.weight.gradient == "detached":
            text = f"d/d logprob = w ({d})"
        else:
            text = f"d/d logprob = w ({ESTIMATORS[self.estimator][2]}) (token level: w (k + k'))"
        clamps = self.input_clamp is not None or self.output_clamp is not None
        return text + (" where no clamp is active, else 0" if clamps else "")

    def info(self) -> dict[str, Any]:
        return {
            "framework": self.framework,
            "version": self.version,
            "kind": self.kind,
            "source": str(self.site),
            "file": self.site.file,
            "function": self.site.function,
            "lines": self.site.lines,
            "formula": self.formula(),
            "gradient": self.gradient(),
            "placement": self.placement,
            "reduction": self.reduction,
            "dtype": self.dtype,
            "options": self.options,
            "detached": self.detached,
            "supported": self.unsupported is None,
            "note": self.note,
        }


def _clamp_value(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a positive number or None, got {value!r}")
    if not (value > 0 and value < float("inf")):
        raise ValueError(f"{name} must be a positive number or None, got {value!r}")
    return float(value)


def _estimator(ops: Any, name: str) -> Callable[[Any], Any]:
    if name == "abs":
        return ops.abs
    if name == "sq":
        return lambda l: l * l
    if name == "k3_swapped":
        return lambda l: ops.k3(-l)
    return log_ratio_estimator(ops, name)


def _exp_or_zero(ops: Any, x: Any) -> Any:
    """exp(x), with 0 (and gradient 0) wherever exp(x) is not finite or x is NaN."""
    bad = ops.nonfinite(ops.exp(ops.stop_gradient(x)))
    return ops.where(bad, 0.0, ops.exp(ops.where(bad, 0.0, x)))


def _weight(spec: PenaltySpec, ops: Any, lp: Any, l: Any, c: Any, opts: dict[str, Any]) -> Any:
    return _weight_and_log(spec, ops, lp, l, c, opts)[0]


def _weight_and_log(
    spec: PenaltySpec, ops: Any, lp: Any, l: Any, c: Any, opts: dict[str, Any]
) -> tuple[Any, Any]:
    """(w, x) with w = exp(x) a plain differentiable token-level weight, else (w, None)."""
    w = spec.weight
    if w is None:
        return None, None
    if w.switch is not None and not _flag(w.switch, opts[w.switch]):
        for name in (w.option, w.ratio_option):
            if name and opts.get(name) is not None:
                raise ValueError(f"{spec.framework}: {name}= is used only with {w.switch}=True")
        return None, None
    level = w.level
    if w.level_option is not None:
        chosen = opts[w.level_option]
        if chosen not in ("token", "sequence"):
            raise ValueError(
                f"{w.level_option} must be one of ('token', 'sequence'), got {chosen!r}"
            )
        level = "token" if chosen == "token" else "sequence_mean"
    behaviour = opts[w.option]
    if w.option_switch is not None and not _flag(w.option_switch, opts[w.option_switch]):
        if behaviour is not None:
            raise ValueError(
                f"{spec.framework}: {w.option}= is used only with {w.option_switch}=True"
            )
    given = opts.get(w.ratio_option) if w.ratio_option else None
    if given is not None:
        if behaviour is not None:
            raise ValueError(f"{spec.framework}: give {w.option}= or {w.ratio_option}=, not both")
        return given, None
    if behaviour is None:
        if w.missing == "none":
            return None, None
        behaviour = ops.stop_gradient(lp)
    x = lp - behaviour
    if level != "token":
        m = ops.ones_like(x) if opts.get("mask") is None else ops.ones_like(x) * opts["mask"]
        x = ops.sum_last(x * m)
        if level == "sequence_mean":
            x = x / ops.clip(ops.sum_last(m), 1.0, None)
    if w.gradient == "detached":
        x = ops.stop_gradient(x)
    weight = _exp_or_zero(ops, x) if w.nonfinite_to_zero else ops.exp(x)
    if w.detach_where_clamped and c is not l:
        weight = ops.where(l == c, weight, ops.stop_gradient(weight))
    if w.mask_range is not None:
        value = ops.stop_gradient(weight)
        outside = (value < w.mask_range[0]) | (value > w.mask_range[1])
        weight = ops.where(outside, 0.0, weight)
    if w.truncate is not None:
        weight = ops.clip(weight, None, w.truncate)
    plain = level == "token" and w.gradient == "differentiable" and w.mask_range is None
    return weight, (x if plain and w.truncate is None else None)


def _weighted_k3(spec: PenaltySpec, ops: Any, ic: float | None, opts: dict[str, Any]) -> Any:
    """(lp, ref) -> w · k3(c) for a differentiable w = exp(lp - μ), with d/d logprob free of the
    product rule's cancellation: w k3 + w (1 - e^c) loses the digits of the exact -w c as
    e^c grows (all of them once e^c ≫ 1/eps). Where the clamp is inactive, w e^c =
    exp(ref - μ) does not depend on logprob, so there, for c > 1, d/d logprob is taken from
    -w (1 + c): -w c with a relative error of a few eps. The value (bit for bit) and d/d ref,
    d/d μ are the product's own."""
    option = spec.weight.option if spec.weight is not None else ""

    def parts(lp: Any, ref: Any, o: dict[str, Any]) -> tuple[Any, Any, Any, Any]:
        l = ref - lp
        c = l if ic is None else ops.clip(l, -ic, ic)
        w, x = _weight_and_log(spec, ops, lp, l, c, o)
        return l, c, w, x

    def fn(lp: Any, ref: Any) -> Any:
        _, c1, w1, _ = parts(ops.stop_gradient(lp), ref, opts)
        product = w1 * ops.k3(c1)  # value, d/d ref and d/d μ (logprob held fixed)
        frozen = dict(opts)
        if frozen.get(option) is not None:
            frozen[option] = ops.stop_gradient(frozen[option])
        l2, c2, w2, _ = parts(lp, ops.stop_gradient(ref), frozen)
        use = (l2 == c2) & (c2 > 1.0) & ~ops.nonfinite(ops.stop_gradient(w2))
        cs, ws = (ops.where(use, v, 0.0) for v in (c2, w2))  # no 0 * inf in a backward pass
        # there w e^c = exp(ref - μ) is a constant: -w (1 + c) has the derivative of w k3
        by_logprob = ops.where(use, -ws * (1.0 + cs), w2 * ops.k3(c2))
        bad = ops.nonfinite(ops.stop_gradient(by_logprob))  # w k3 overflows: no gradient to add
        by_logprob = ops.where(bad, 0.0, by_logprob)
        return product + (by_logprob - ops.stop_gradient(by_logprob))

    return fn


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be a bool, got {value!r}")
    return value


def evaluate(spec: PenaltySpec, ops: Any, lp: Any, ref: Any, opts: dict[str, Any]) -> Any:
    """The spec's per-token value on float64 backend arrays (autograd intact for torch)."""
    ic, oc = spec.input_clamp, spec.output_clamp
    if spec.clamp_options:
        ic = _clamp_value(spec.clamp_options[0], opts[spec.clamp_options[0]])
        oc = _clamp_value(spec.clamp_options[1], opts[spec.clamp_options[1]])
    l = ref - lp
    if spec.estimator == "pi_k1_sum":  # EasyR1's "full": a function of logprob, not of l alone
        value = ops.sum_last(ops.exp(lp) * -l)
        return ops.stop_gradient(value) if spec.detached else value
    c = l if ic is None else ops.clip(l, -ic, ic)
    k = _estimator(ops, spec.estimator)
    w, x = _weight_and_log(spec, ops, lp, l, c, opts)
    fused = x is not None and spec.estimator == "k3" and ops.name != "numpy"
    if w is None:
        value = k(c) if oc is None else ops.clamp_output(k, (c,), -oc, oc)
    elif fused and (oc is None or spec.weight.order == "before_clamp"):
        f = _weighted_k3(spec, ops, ic, opts)
        value = f(lp, ref) if oc is None else ops.clamp_output(f, (lp, ref), -oc, oc)
    elif spec.weight is not None and spec.weight.order == "before_clamp":

        def weighted(x: Any, v: Any) -> Any:
            return v * k(x)

        value = weighted(c, w) if oc is None else ops.clamp_output(weighted, (c, w), -oc, oc)
    else:
        value = w * (k(c) if oc is None else ops.clamp_output(k, (c,), -oc, oc))
    if spec.gradient_of is not None:
        backward = _estimator(ops, spec.gradient_of)(l)
        # (g - sg(g)) is exactly 0, so the value is the kind's own, bit for bit
        value = backward - ops.stop_gradient(backward) + ops.stop_gradient(value)
    if spec.detached:
        value = ops.stop_gradient(value)
    return value
