"""The optional dependencies of :mod:`klest.lm`, imported when a function needs them."""

from __future__ import annotations

from types import ModuleType

__all__ = ["require", "resolve_dtype"]

#: what ``pip install klest[lm]`` installs
PACKAGES = ("torch", "transformers", "tokenizers")


def require() -> tuple[ModuleType, ModuleType, ModuleType]:
    """(torch, transformers, tokenizers), or a one-line ImportError naming the extra."""
    try:
        # deferred: torch, transformers and tokenizers are the optional `lm` extra
        import tokenizers
        import torch
        import transformers
    except ImportError as err:
        missing = getattr(err, "name", None) or "a dependency"
        raise ImportError(
            f"klest.lm needs torch, transformers and tokenizers ({missing} is not installed): "
            "pip install klest[lm]"
        ) from None
    return torch, transformers, tokenizers


def resolve_dtype(name: str, value: object) -> object:
    """A torch floating dtype from ``"float32"`` / ``"bfloat16"`` / ``"float16"`` /
    ``"float64"`` or a ``torch.dtype``; ValueError naming the argument otherwise."""
    torch, _, _ = require()
    allowed = {
        "float32": torch.float32,
        "bfloat16": torch.bfloat16,
        "float16": torch.float16,
        "float64": torch.float64,
    }
    if isinstance(value, torch.dtype):
        if value not in allowed.values():
            raise ValueError(f"{name} must be a floating dtype ({', '.join(allowed)}), got {value}")
        return value
    if isinstance(value, str) and value in allowed:
        return allowed[value]
    raise ValueError(
        f"{name} must be one of {', '.join(allowed)} (or a torch dtype), got {value!r}"
    )
