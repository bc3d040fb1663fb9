"""Checkpoint files: plain tensors and dicts only (loaded with ``torch.load(weights_only=True)``).

Payload: ``format_version``, ``method`` (posterior kind), ``config`` (ModelConfig as a dict),
``elements``, ``e0s`` {symbol: eV}, ``state_dict``, ``calibration`` {name: factor}, ``extra`` (any
tensors / plain data a method needs, e.g. SWAG moments or ensemble members) and ``hash``, a SHA-256 of
everything else. Written atomically; a half-written file is never left behind.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from potentials.model import ModelConfig, build_model
from structures.common import InputError, atomic_write_bytes

FORMAT_VERSION = 1
REQUIRED_KEYS = ("format_version", "method", "config", "elements", "e0s", "state_dict", "hash")


def _digest(obj: Any, h: Any) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(obj, dict):
        h.update(b"{")
        for key in sorted(obj, key=str):
            h.update(str(key).encode() + b":")
            _digest(obj[key], h)
        h.update(b"}")
    elif isinstance(obj, list | tuple):
        h.update(b"[")
        for item in obj:
            _digest(item, h)
        h.update(b"]")
    else:
        h.update(json.dumps(obj, default=str).encode())


def content_hash(payload: dict[str, Any]) -> str:
    """SHA-256 (hex) of a payload without its ``hash`` entry."""
    h = hashlib.sha256()
    _digest({k: v for k, v in payload.items() if k != "hash"}, h)
    return h.hexdigest()


def save(
    path: str | os.PathLike,
    model: torch.nn.Module,
    config: ModelConfig,
    extra: dict[str, Any] | None = None,
    method: str = "point",
    calibration: dict[str, float] | None = None,
) -> str:
    """Write ``model`` (its state_dict) with ``config`` to ``path`` atomically; returns the content hash."""
    payload: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "method": method,
        "config": config.to_dict(),
        "elements": list(config.elements),
        "e0s": dict(zip(config.elements, config.e0s or [0.0] * len(config.elements))),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "calibration": dict(calibration or {}),
        "extra": dict(extra or {}),
    }
    payload["hash"] = content_hash(payload)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    return payload["hash"]


def load(path: str | os.PathLike, verify: bool = True) -> dict[str, Any]:
    """Read and check a checkpoint; InputError for missing, truncated/corrupted, wrong-version files."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" not in str(exc).lower():
            raise InputError(f"checkpoint {path} is truncated or corrupted ({type(exc).__name__})") from exc
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f" ({found.group(1)})" if found else ""
        raise InputError(
            f"checkpoint {path} contains a pickled Python object{what}; refused: checkpoints may hold only "
            "tensors and plain data (weights_only loading)"
        ) from exc
    except Exception as exc:
        raise InputError(f"checkpoint {path} is truncated or corrupted ({type(exc).__name__})") from exc
    if not isinstance(payload, dict):
        raise InputError(f"checkpoint {path} is not a potential checkpoint (got {type(payload).__name__})")
    missing = [k for k in REQUIRED_KEYS if k not in payload]
    if missing:
        raise InputError(f"checkpoint {path} lacks key(s) {', '.join(missing)}")
    if payload["format_version"] != FORMAT_VERSION:
        raise InputError(
            f"checkpoint {path} has format version {payload['format_version']!r}; this build reads {FORMAT_VERSION}"
        )
    if verify and content_hash(payload) != payload["hash"]:
        raise InputError(f"checkpoint {path} is corrupted (content hash mismatch)")
    state = payload["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"checkpoint {path} has a malformed state_dict (expected a dict of tensors)")
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise InputError(
            f"checkpoint {path} has non-finite (NaN/inf) weights in {len(bad)} tensor(s), e.g. {bad[0]}; "
            "the training that wrote it diverged"
        )
    return payload


def model_from_payload(
    payload: dict[str, Any], state_dict: dict[str, torch.Tensor] | None = None
) -> torch.nn.Module:
    """Rebuild the model of a loaded payload (eval mode) with ``state_dict`` (default: the payload's)."""
    if not isinstance(payload["config"], dict):
        raise InputError(f"checkpoint config is a {type(payload['config']).__name__}, not a dict")
    config = ModelConfig.from_dict(payload["config"])
    model = build_model(config)
    weights = payload["state_dict"] if state_dict is None else state_dict
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        mine = model.state_dict()
        missing = len(set(mine) - set(weights))
        unexpected = len(set(weights) - set(mine))
        shape = sum(1 for k in set(mine) & set(weights) if tuple(mine[k].shape) != tuple(weights[k].shape))
        raise InputError(
            f"checkpoint weights do not match its config ({missing} missing, {unexpected} unexpected, "
            f"{shape} of another shape)"
        ) from exc
    return model.eval()


def load_model(path: str | os.PathLike) -> tuple[torch.nn.Module, dict[str, Any]]:
    """(model in eval mode, payload) from a checkpoint file."""
    payload = load(path)
    return model_from_payload(payload), payload


def model_hash(path: str | os.PathLike) -> str:
    """The content hash stored in (and verified against) a checkpoint; identifies a model in result stores."""
    return load(path)["hash"]


# what `screen anchor` writes into a posterior's recalibration: offsets and σ of ΔGH*, nothing the network or
# its relaxations see (``dg_fit``: the record of a ΔGH* σ factor fitted by `screen anchor --sigma-only`)
ANCHOR_KEYS = ("anchor", "dg_offset", "dg_sigma_add", "dg_fit")


# training provenance: the hosts whose DFT labels a model was trained or fitted on (its own data and that of the
# checkpoint it started from), so reports and model cards never count them as held-out tests
DFT_HOSTS = "dft_hosts"
DFT_REFERENCES = ("gpaw", "vasp", "qe")  # labellers (info key structures.keys.REFERENCE) whose labels are DFT


def dft_hosts_of(frames) -> set[str]:
    """Hosts (info ``host``) of the ``frames`` labelled by a DFT code (:data:`DFT_REFERENCES`)."""
    from structures import keys as SK

    return {
        str(a.info.get(SK.HOST) or "")
        for a in frames
        if str(a.info.get(SK.REFERENCE, a.info.get("engine", ""))) in DFT_REFERENCES
    } - {""}


def dft_hosts(payload: dict[str, Any] | None) -> set[str]:
    """Hosts whose DFT labels the checkpoint ``payload`` records having been trained on (``extra``
    :data:`DFT_HOSTS`); empty for None or a model trained on none (or before the record existed)."""
    if not payload:
        return set()
    return {str(h) for h in (payload.get("extra") or {}).get(DFT_HOSTS, ()) or ()}


def dft_hosts_text(hosts: Iterable[str]) -> str:
    """One line naming ``hosts``, those whose DFT labels a model was trained on, or '' for none."""
    hosts = sorted(hosts)
    if not hosts:
        return ""
    return f"trained on DFT labels of {len(hosts)} host(s): {', '.join(hosts)} (no test of this model)"


def provenance_extra(posterior: Any) -> dict[str, Any]:
    """The ``extra`` entries every posterior ``save`` writes for its training provenance: :data:`DFT_HOSTS`
    from the posterior's ``dft_hosts`` attribute (set by :func:`potentials.bayes.posterior_from_payload`
    from the checkpoint it was loaded from, and by a fit from its data), or nothing when it has none. A
    copy that changes no weight (an anchoring, a σ factor) thus keeps its parent's record."""
    hosts = sorted({str(h) for h in getattr(posterior, "dft_hosts", ()) or ()})
    return {DFT_HOSTS: hosts} if hosts else {}


def network_hash(payload: dict[str, Any]) -> str:
    """The content hash of a checkpoint payload without its DFT anchoring (:data:`ANCHOR_KEYS` of
    ``extra["recalibration"]``, and the ΔGH* σ factor back at its parent's value after ``--sigma-only``):
    equal for a posterior and its anchored or σ-calibrated copies, so a screen can reuse the relaxations of
    the unanchored model. Equal to ``payload["hash"]`` when there is no anchoring."""
    recal = (payload.get("extra") or {}).get("recalibration")
    if not isinstance(recal, dict) or not any(k in recal for k in ANCHOR_KEYS):
        return payload["hash"]
    extra = dict(payload["extra"])
    extra["recalibration"] = {k: v for k, v in recal.items() if k not in ANCHOR_KEYS}
    fit = recal.get("dg_fit")
    if isinstance(fit, dict) and "parent_dg" in fit:  # the ΔGH* σ factor the copy was made from
        extra["recalibration"]["dg"] = float(fit["parent_dg"])
    return content_hash({**payload, "extra": extra})


def relaxation_hash(payload: dict[str, Any]) -> str:
    """The hash that keys a model's relaxations in a result store: :func:`network_hash`, or, for a posterior
    refitted on the unchanged weights of another (a Laplace fit without training, ``screen train --epochs
    0``: new σ, same mean forces), that model's relaxation hash, recorded as ``extra["network_of"]`` when
    the fit was made. Relaxations follow the mean forces only, so such a copy finds its parent's."""
    parent = (payload.get("extra") or {}).get("network_of")
    return str(parent) if parent else network_hash(payload)
