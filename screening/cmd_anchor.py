"""``screen anchor``: anchor a model's ΔGH* to plane-wave DFT labels (issue 10).

    screen anchor --model potentials/models/default.pt --dft-db dft/labels.db --preset pw500 \\
        --exclude-hosts benchmarks/heldout_hosts.txt --out anchored.pt

From every (host, host+H, H2) triple of one DFT settings hash in the label store (hosts named in
``--exclude-hosts`` left out, so they stay a fair test), it fits

- the offsets: the mean of DFT ΔE_H − model ΔE_H at the DFT geometries (eV) over the hosts, and one per
  metal pair with DFT labels, pooled towards it (``--kappa``; ``--global-only`` for one offset), added to
  every ΔGH* the anchored model reports (see :mod:`screening.anchoring`);
- the anchoring's σ: the leave-one-host-out errors of those offsets updating a prior host-to-host spread
  (``--prior-sigma``, ``--prior-weight``; :func:`screening.anchoring.predictive_sigma`), added in
  quadrature to the model's ΔGH* σ. It needs ≥ 2 DFT hosts; with few, the prior dominates.

It writes a copy of the posterior whose recalibration carries both and the record of how they were fitted
(hosts, settings, residuals); the network weights are unchanged. ``screen run --model anchored.pt`` then
reports DFT-anchored ΔGH*; `screen bench anchor` compares this with fine-tuning on the same labels.

``--sigma-only`` fits no offset: it scales the model's ΔGH* σ (both parts, the posterior's ``recal.dg``) by
the factor s that gives the z-scores (model − DFT ΔE_H) / σ of the chosen hosts' triples unit variance
(the Gaussian maximum likelihood, s² = mean z²). The hosts must be ones the model never saw (``--hosts``:
e.g. DFT labels that landed after a fine-tuning), else s is that of training errors and too small. It
prints the leave-one-host-out coverage (each host's z-scores under the factor of the others), the honest
estimate of what the factor does on new hosts; the held-out hosts of `screen bench model --dft-db` measure
it. A screen with the copy reuses every relaxation of the parent (same network hash).
"""

from __future__ import annotations

import argparse


def add_dft_source_arguments(parser: argparse.ArgumentParser, model_help: str) -> None:
    """``--model``, ``--dft-db`` and ``--preset``: the model and the DFT labels it is anchored to or judged on
    (shared with ``screen bench anchor``)."""
    parser.add_argument("--model", default=None, help=f"{model_help} (default: the shipped model)")
    parser.add_argument("--dft-db", default="dft/labels.db", help="DFT label store (default dft/labels.db)")
    parser.add_argument("--preset", default="pw500", help="DFT settings preset of the labels (default pw500)")


def check_dft_source(args: argparse.Namespace) -> None:
    """One-line errors for a missing ``--dft-db`` or an unknown ``--preset``."""
    from pathlib import Path

    from screening.labelling import PRESETS
    from structures.common import InputError

    if not Path(args.dft_db).exists():
        raise InputError(
            f"--dft-db {args.dft_db!r} does not exist; allowed: a store written by `screen label`"
        )
    if args.preset not in PRESETS:
        raise InputError(f"--preset {args.preset!r} unknown; allowed: {', '.join(PRESETS)}")


def add_prior_arguments(parser: argparse.ArgumentParser) -> None:
    """``--prior-sigma`` / ``--prior-weight`` of the anchoring's σ (screening.anchoring.predictive_sigma)."""
    from .anchoring import PRIOR_SIGMA, PRIOR_WEIGHT

    parser.add_argument(
        "--prior-sigma",
        type=float,
        default=PRIOR_SIGMA,
        help=f"prior host-to-host spread of the model's DFT error, eV (default {PRIOR_SIGMA})",
    )
    parser.add_argument(
        "--prior-weight",
        type=float,
        default=PRIOR_WEIGHT,
        help=f"weight of that prior in hosts (default {PRIOR_WEIGHT:g}; 0: the leave-one-host-out errors alone)",
    )


def check_prior_arguments(args: argparse.Namespace) -> None:
    import math

    from structures.common import InputError

    if not (math.isfinite(args.prior_sigma) and args.prior_sigma >= 0):
        raise InputError(f"--prior-sigma {args.prior_sigma} not allowed; need a finite number >= 0 (eV)")
    if not (math.isfinite(args.prior_weight) and args.prior_weight >= 0):
        raise InputError(f"--prior-weight {args.prior_weight} not allowed; need a finite number >= 0")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dft_source_arguments(parser, "posterior to anchor")
    parser.add_argument(
        "--exclude-hosts",
        default=None,
        help="hosts never fitted on: comma list or file (e.g. benchmarks/heldout_hosts.txt)",
    )
    parser.add_argument(
        "--hosts",
        default=None,
        help="fit on these hosts' DFT triples only: comma list or file (default: every DFT host outside "
        "--exclude-hosts)",
    )
    parser.add_argument(
        "--sigma-only",
        action="store_true",
        help="fit no offset: scale the ΔGH* σ so the z-scores of the hosts' DFT errors have unit variance "
        "(for a model never trained on those hosts, e.g. a fine-tuned one and labels that came after it)",
    )
    parser.add_argument("--out", required=True, help="anchored posterior to write (.pt)")
    parser.add_argument("--samples", type=int, default=20, help="posterior samples per ΔE_H (default 20)")
    parser.add_argument(
        "--kappa",
        type=float,
        default=1.0,
        help="pooling of the metal-pair offsets towards the global one: a pair with n DFT hosts moves "
        "n/(n+kappa) of the way to its own mean (default 1)",
    )
    parser.add_argument(
        "--global-only", action="store_true", help="one offset for every host (no metal-pair offsets)"
    )
    parser.add_argument(
        "--site-classes",
        action="store_true",
        help="one offset per site class (H on a metal, on N, on C), applied to each H* site before the "
        "lowest is picked; the metal-pair offsets become deviations from it",
    )
    parser.add_argument(
        "--kappa-class",
        type=float,
        default=1.0,
        help="pooling of the site-class offsets towards the global one (default 1)",
    )
    add_prior_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from potentials.bayes import load_posterior
    from screening import labelling as L
    from structures.common import InputError, read_host_list

    from .anchoring import fit_anchor, site_class
    from .bench_model import MAX_H_FORCE, MAX_STATE_FORCE, dft_triples, triple_de
    from .pipeline import default_model_path

    model_path = args.model or str(default_model_path())
    check_dft_source(args)
    if Path(args.out).resolve() == Path(model_path).resolve():
        raise InputError(f"--out {args.out!r} is the input model; write the anchored model to a new file")
    if args.samples < 1:
        raise InputError(f"--samples {args.samples} not allowed; need >= 1")
    if not (args.kappa >= 0.0 and args.kappa < float("inf")):
        raise InputError(f"--kappa {args.kappa} not allowed; need a finite number >= 0")
    if not (args.kappa_class >= 0.0 and args.kappa_class < float("inf")):
        raise InputError(f"--kappa-class {args.kappa_class} not allowed; need a finite number >= 0")
    check_prior_arguments(args)
    exclude = set(read_host_list(args.exclude_hosts, "--exclude-hosts")) if args.exclude_hosts else set()
    only = set(read_host_list(args.hosts, "--hosts")) if args.hosts else None
    post = load_posterior(model_path)
    if args.sigma_only and (args.site_classes or args.global_only):
        raise InputError(
            "--sigma-only fits no offset; allowed: without --site-classes / --global-only (offset options)"
        )
    if args.sigma_only and isinstance(post.recal.anchor, dict):
        raise InputError(
            f"--sigma-only on {model_path}: the model already carries a DFT offset anchoring; allowed: a "
            "model without one (calibrate the unanchored model)"
        )
    sh = L.settings_hash(L.get_engine("gpaw"), L.get_preset(args.preset))
    left_out: list[dict] = []
    triples = [t for t in dft_triples(args.dft_db, sh, left_out=left_out) if t.get("host") not in exclude]
    if only is not None:
        missing = sorted(only - {t.get("host") for t in triples})
        if missing:
            raise InputError(
                f"--hosts: no {args.preset} DFT triple outside --exclude-hosts for {', '.join(missing)}; "
                f"allowed: hosts with one in {args.dft_db} ({', '.join(sorted({str(t.get('host')) for t in triples}))})"
            )
        triples = [t for t in triples if t.get("host") in only]
    for t in left_out:
        why = (
            f"DFT force on H {t['h_force']:.1f} eV/Å > {MAX_H_FORCE:g}"
            if t["h_force"] > MAX_H_FORCE
            else f"DFT force {max(t['host_fmax'], t['state_fmax']):.1f} eV/Å on an atom > {MAX_STATE_FORCE:g}"
        )
        print(f"left out {t['name']}: {why} at the model geometry (no ΔE_H truth)")
    rows = []
    for t in triples:
        de, sig = triple_de(post, t["atoms"], args.samples, anchored=False)
        rows.append(
            {
                "name": t["name"],
                "host": t["host"],
                "dft_de": t["dft_de"],
                "base": de,
                "sigma": sig,
                "site_class": site_class(t["atoms"][1]),
            }
        )
    hosts = sorted({r["host"] for r in rows})
    if len(hosts) < 2:
        raise InputError(
            f"anchoring needs DFT triples of at least 2 hosts outside --exclude-hosts, found {len(hosts)}"
            f"{' (' + hosts[0] + ')' if hosts else ''}; label more with `screen validate` or `screen label`"
        )
    if args.sigma_only:
        return _write_sigma_only(args, post, model_path, rows, sh, exclude)
    fit = fit_anchor(
        rows,
        None if args.global_only else args.kappa,
        args.prior_sigma,
        args.prior_weight,
        site_classes=args.site_classes,
        kappa_class=args.kappa_class,
    )
    fit.update(_fit_record(args, rows, sh, exclude, model_path))
    post.recal.dg_offset = fit["offset"]
    post.recal.dg_sigma_add = fit["sigma_add"]
    post.recal.anchor = fit
    digest = post.save(args.out)  # keeps the training provenance it was loaded with
    pairs = ", ".join(f"{p} {o:+.3f}" for p, o in fit["pair_offsets"].items())
    classes = ", ".join(
        f"H on {c} {o:+.3f} (σ {fit['class_sigma'][c]:.3f})" for c, o in fit.get("class_offsets", {}).items()
    )
    devs = ", ".join(f"{p} {o:+.3f}" for p, o in fit.get("pair_deviations", {}).items())
    print(
        f"anchored {model_path} -> {args.out} ({digest[:12]}): ΔGH* offset {fit['offset']:+.3f} eV"
        + (f" (metal pairs: {pairs}; others the global one)" if pairs else "")
        + (f" (site classes: {classes}; metal-pair deviations: {devs or 'none'})" if classes else "")
        + f", σ_anchor {fit['sigma_add']:.3f} eV (leave-one-host-out with a {fit['prior_sigma']:g} eV prior; {fit['sigma_add_covered']:.3f} eV for "
        f"labelled pairs) from {fit['n_triples']} DFT triple(s) of {len(fit['hosts'])} hosts: "
        f"{', '.join(fit['hosts'])}"
    )
    return 0


def fit_sigma_factor(rows: list[dict]) -> dict:
    """The ΔGH* σ factor of ``rows`` (``host``, ``dft_de``, ``base`` = model ΔE_H, ``sigma``; eV) and its
    leave-one-host-out check: ``factor`` s = (mean z²)^½ over the rows, z = (base − dft_de) / sigma;
    ``loho_z`` each row's z under the factor fitted without its host, ``loho_coverage`` the share of those
    inside 1 and 2 (a factor that fits its own hosts covers them by construction; this is what it does on
    a host it has not seen)."""
    import numpy as np

    from .bench_heldout import fit_dg_scale

    err = np.array([r["base"] - r["dft_de"] for r in rows], dtype=float)
    sig = np.array([r["sigma"] for r in rows], dtype=float)
    if not (np.all(np.isfinite(sig)) and np.all(sig > 0) and np.all(np.isfinite(err))):
        from structures.common import InputError

        raise InputError("σ calibration needs a finite model ΔE_H and a σ > 0 for every DFT triple")
    factor = fit_dg_scale(err, sig)
    host = np.array([r["host"] for r in rows])
    loho = np.empty_like(err)
    for h in set(host.tolist()):
        m = host == h
        loho[m] = err[m] / (fit_dg_scale(err[~m], sig[~m]) * sig[m])
    return {
        "factor": factor,
        "z": (err / sig).tolist(),
        "loho_z": loho.tolist(),
        "loho_coverage": [float(np.mean(np.abs(loho) <= 1)), float(np.mean(np.abs(loho) <= 2))],
        "mae": float(np.abs(err).mean()),
        "mean_sigma_before": float(sig.mean()),
    }


def _fit_record(args, rows: list[dict], sh: str, exclude: set[str], model_path: str) -> dict:
    """What a fit written by ``screen anchor`` records besides its numbers: the DFT − model residual of each
    triple (eV) and where the labels and the model came from."""
    import datetime

    return {
        "residuals": {r["name"]: float(r["dft_de"] - r["base"]) for r in rows},
        "dft_db": str(args.dft_db),
        "settings_hash": sh,
        "preset": args.preset,
        "excluded_hosts": sorted(exclude),
        "source_model": str(model_path),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
    }


def _write_sigma_only(args, post, model_path: str, rows: list[dict], sh: str, exclude: set[str]) -> int:

    fit = fit_sigma_factor(rows)
    parent = float(post.recal.dg)
    fit.update(
        parent_dg=parent,
        hosts=sorted({r["host"] for r in rows}),
        triples=[r["name"] for r in rows],
        n_triples=len(rows),
        **_fit_record(args, rows, sh, exclude, model_path),
    )
    post.recal.dg = parent * fit["factor"]
    post.recal.dg_fit = fit
    digest = post.save(args.out)  # keeps the training provenance it was loaded with
    c1, c2 = fit["loho_coverage"]
    print(
        f"σ-calibrated {model_path} -> {args.out} ({digest[:12]}): ΔGH* σ factor {fit['factor']:.3f} "
        f"(now {post.recal.dg:.3f}) from {fit['n_triples']} DFT triple(s) of {len(fit['hosts'])} hosts "
        f"({', '.join(fit['hosts'])}): model ΔE_H MAE {fit['mae']:.3f} eV, mean σ {fit['mean_sigma_before']:.3f} "
        f"-> {fit['factor'] * fit['mean_sigma_before']:.3f} eV; leave-one-host-out coverage 1σ {c1:.2f}, "
        f"2σ {c2:.2f}; no offset"
    )
    return 0
