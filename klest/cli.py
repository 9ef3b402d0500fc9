"""The ``klest`` command line: the only place in klest that writes files.

``klest demo`` prints the exact bias/true and stdev/true table of Schulman's two Gaussian
settings; ``klest list`` shows the registered distributions and estimators.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

__all__ = ["main"]

SCHULMAN_CASES = (
    ("KL(q||p) = 0.005", {"family": "normal", "loc": 0.1, "scale": 1.0}),
    ("KL(q||p) = 0.5", {"family": "normal", "loc": 1.0, "scale": 1.0}),
)


def _demo(args: argparse.Namespace) -> int:
    import pandas as pd

    from klest import from_dict, simulate
    from klest.exact import exact_frame
    from klest.tables import monte_carlo_table, schulman_table

    q = from_dict({"family": "normal", "loc": 0.0, "scale": 1.0})
    exact, sampled = [], []
    for case, (label, p_config) in enumerate(SCHULMAN_CASES):
        p = from_dict(p_config)
        frame = exact_frame(q, p, ["k1", "k2", "k3"])
        frame.insert(0, "case", label)
        exact.append(frame)
        result = simulate(q, p, ["k1", "k2", "k3"], n=args.n, seed=args.seed,
                          workers=args.workers, case=case)  # fmt: skip
        mc = result.to_frame().reset_index(drop=True)
        mc.insert(0, "case", label)
        sampled.append(mc)
    print("Schulman (2020), q = N(0, 1), p = N(mu, 1): exact values, no sampling")
    print(schulman_table(pd.concat(exact, ignore_index=True)))
    print()
    print(f"Monte Carlo, n = {args.n:,} draws per case, seed {args.seed} (± one standard error)")
    print(monte_carlo_table(pd.concat(sampled, ignore_index=True)))
    return 0


def _list(_: argparse.Namespace) -> int:
    from klest import FAMILIES, estimators

    print("distributions:")
    for family, cls in sorted(FAMILIES.items()):
        params = ", ".join(p.name for p in cls.params)
        print(f"  {family:<20} {cls.__name__}({params})")
    print("estimators:")
    for name, est in estimators.registry().items():
        alias = f" (alias {', '.join(est.aliases)})" if est.aliases else ""
        print(f"  {name:<18} {est.formula:<42} targets {est.target.label}{alias}")
    return 0


def _positive_int(text: str) -> int:
    value = _non_negative_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="klest",
        description="Monte Carlo estimators of KL divergence, with the exact truth beside "
        "every estimate.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser(
        "demo", help="Schulman's bias/stdev table: exact values, then Monte Carlo beside them"
    )
    demo.add_argument("--n", type=_positive_int, default=10_000_000, help="draws per case")
    demo.add_argument("--seed", type=_non_negative_int, default=2020)
    demo.add_argument("--workers", type=_positive_int, default=os.cpu_count() or 1)
    demo.set_defaults(handler=_demo)
    listing = commands.add_parser("list", help="list distributions and estimators")
    listing.set_defaults(handler=_list)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``klest`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return 0
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
