"""The ``klest`` command line: the only place in klest that writes files.

``klest demo`` prints the exact bias/true and stdev/true table of Schulman's two Gaussian
settings; ``klest list`` shows the registered distributions and estimators.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]

SCHULMAN_CASES = (
    ("KL(q||p) = 0.005", {"family": "normal", "loc": 0.1, "scale": 1.0}),
    ("KL(q||p) = 0.5", {"family": "normal", "loc": 1.0, "scale": 1.0}),
)


def _demo(_: argparse.Namespace) -> int:
    import pandas as pd

    from klest import from_dict
    from klest.exact import exact_frame
    from klest.tables import schulman_table

    q = from_dict({"family": "normal", "loc": 0.0, "scale": 1.0})
    frames = []
    for label, p_config in SCHULMAN_CASES:
        frame = exact_frame(q, from_dict(p_config), ["k1", "k2", "k3"])
        frame.insert(0, "case", label)
        frames.append(frame)
    print("Schulman (2020), q = N(0, 1), p = N(mu, 1): exact values, no sampling")
    print(schulman_table(pd.concat(frames, ignore_index=True)))
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="klest",
        description="Monte Carlo estimators of KL divergence, with the exact truth beside "
        "every estimate.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser("demo", help="print Schulman's bias/stdev table (exact values)")
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
