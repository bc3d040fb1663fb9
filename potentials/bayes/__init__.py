"""Bayesian posteriors over RACE potentials; every method implements :class:`potentials.posterior.Posterior`.

A checkpoint's ``method`` field names its posterior. ``load_posterior`` calls the module function
``from_checkpoint(payload) -> Posterior`` of ``potentials.bayes.<method>`` (e.g. "point" -> point.py,
"swag" -> swag.py) or of a module added with :func:`register`. New methods need no edit here.
"""

from __future__ import annotations

import importlib
import os
import re
from typing import Any

from potentials.posterior import Posterior
from structures.common import InputError

_REGISTRY: dict[str, str] = {}  # method -> module path (overrides the potentials.bayes.<method> convention)


def register(method: str, module: str) -> None:
    """Make ``load_posterior`` import ``module`` for checkpoints whose method is ``method``."""
    _REGISTRY[method] = module


def _loader(method: str):
    if not re.fullmatch(r"[a-z][a-z0-9_]*", method):
        raise InputError(f"checkpoint method {method!r} is not a valid method name")
    module_name = _REGISTRY.get(method, f"{__name__}.{method}")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        raise InputError(f"checkpoint method {method!r} is not available in this build") from exc
    if hasattr(module, "from_checkpoint"):
        return module.from_checkpoint
    raise InputError(f"module {module_name} has no from_checkpoint for method {method!r}")


def posterior_from_payload(payload: dict[str, Any], device: str = "cpu") -> Posterior:
    """Build the posterior of an already loaded checkpoint payload; its ``dft_hosts`` (training provenance,
    :func:`potentials.checkpoint.provenance_extra`) is the payload's record, which every ``save`` writes back."""
    from potentials import checkpoint

    posterior = _loader(str(payload.get("method", "point")))(payload)
    posterior.dft_hosts = frozenset(checkpoint.dft_hosts(payload))
    return posterior.to(device)


def load_posterior(path: str | os.PathLike, device: str = "cpu") -> Posterior:
    """Load any posterior checkpoint, dispatching on its ``method`` field."""
    from potentials import checkpoint

    payload = checkpoint.load(path)
    try:
        return posterior_from_payload(payload, device)
    except InputError as exc:
        raise InputError(f"checkpoint {path}: {exc}") from exc
    except (KeyError, TypeError, ValueError, AttributeError) as exc:  # right keys, bad content
        raise InputError(
            f"checkpoint {path} is not a usable '{payload.get('method')}' posterior ({type(exc).__name__}: {exc})"
        ) from exc


__all__ = ["load_posterior", "posterior_from_payload", "register"]
