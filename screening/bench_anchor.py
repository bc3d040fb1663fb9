"""``screen bench anchor`` (issue 10): anchor the model to plane-wave DFT and judge it on held-out hosts.

The DFT labels of one settings hash in the label store (``screen label`` / ``screen validate``) are split by
host: hosts named in ``--heldout`` (a comma list or a file, e.g. benchmarks/heldout_hosts.txt) are never
trained on; every other converged frame (host, host+H, the H2 reference) is the DFT training set. On the
held-out (host, host+H, H2) triples ΔE_H = E(host+H) - E(host) - E(H2)/2 is compared at the DFT geometry
(single points, so the ΔGH* correction cancels in the error) for:

- ``base``: the pre-trained model (SevenNet-0 labels), as shipped;
- ``offset``: base + the mean DFT - base ΔE_H of the training hosts (the cheapest correction);
- ``pair``: base + a metal-pair offset pooled towards that mean (``screen anchor``, screening.anchoring);
- ``site``: base + an offset per site class, what the H binds to (metal, N, C: ``screen anchor
  --site-classes``); ``site-pair``: the same plus the metal pair's deviation from it;
- ``finetune``: base fine-tuned on the DFT training frames (E0s re-fitted to the DFT reference first,
  then the weights; MSE with a large energy weight because ΔE_H is an energy difference), Laplace
  posterior fitted on the same frames;
- ``replay``: like ``finetune`` plus ``--replay-n`` frames of the pre-training set (``--replay``) whose
  forces are replayed with energy_weight 0 (their energies are on SevenNet-0's reference): the network fits
  the DFT energies without forgetting the pre-training forces; with ``--replay-energies references`` the
  energies of the replayed bulk metals and pockets train too, moved by the E0 re-fit, so the formation
  energies (no DFT label has a bulk metal or a bare pocket) keep their pre-training values;
- ``scratch``: the same architecture trained on the DFT training frames only (same DFT budget);
- SevenNet-0 itself, the pre-training labeler.

Writes ``benchmarks/results/anchor.json``, a BENCHMARKS.md section and a parity figure.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

VARIANTS = ("base", "offset", "pair", "site", "site-pair", "finetune", "replay", "scratch")
#: offset variants: (kappa of the pair terms or None, site classes)
OFFSET_VARIANTS = {
    "offset": (False, False),
    "pair": (True, False),
    "site": (False, True),
    "site-pair": (True, True),
}
TRAINED = ("finetune", "replay", "scratch")  # variants whose weights move (leave-one-host-out refits)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from potentials.cmd_train import add_replay_arguments

    from .cmd_anchor import add_dft_source_arguments, add_prior_arguments

    add_dft_source_arguments(parser, "pre-trained posterior")
    parser.add_argument(
        "--heldout",
        required=True,
        help="hosts never trained on: comma list (Pt2@4Nd,Au2@5Na) or a file of whitespace-separated "
        "names (# comments), e.g. benchmarks/heldout_hosts.txt",
    )
    parser.add_argument("--out", default="runs/anchor", help="work folder (models, SevenNet-0 cache)")
    parser.add_argument(
        "--section", default="anchor", help="BENCHMARKS.md section and results JSON name (default anchor)"
    )
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help=f"comma list of {', '.join(VARIANTS)} (default all)"
    )
    parser.add_argument("--epochs", type=int, default=300, help="fine-tuning epochs (default 300)")
    parser.add_argument(
        "--scratch-epochs", type=int, default=300, help="DFT-only training epochs (default 300)"
    )
    parser.add_argument("--lr", type=float, default=2e-3, help="fine-tuning learning rate (default 2e-3)")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=4,
        help="structures per fine-tuning step (default 4, the build steps' recipe; larger batches take fewer, "
        "GPU-friendlier steps but are another recipe)",
    )
    parser.add_argument(
        "--energy-weight", type=float, default=1000.0, help="MSE energy weight (default 1000)"
    )
    parser.add_argument("--force-weight", type=float, default=10.0, help="MSE force weight (default 10)")
    parser.add_argument(
        "--trainable", default="", help="comma list: fine-tune only these parameter groups (default all)"
    )
    parser.add_argument(
        "--kappa", type=float, default=1.0, help="pooling of the `pair` variant's offsets (screen anchor)"
    )
    parser.add_argument(
        "--kappa-class",
        type=float,
        default=1.0,
        help="pooling of the site-class offsets of `site` / `site-pair` (screen anchor --site-classes)",
    )
    add_prior_arguments(parser)
    parser.add_argument(
        "--pretrain-valid",
        default=None,
        help="held-out pre-training frames (extxyz, e.g. runs/d2/valid_all.extxyz): force MAE of each network "
        "against them, the forgetting check of the fine-tuned and DFT-only models",
    )
    parser.add_argument(
        "--pretrain-n",
        type=int,
        default=120,
        help="frames of --pretrain-valid used (seeded sample, default 120)",
    )
    add_replay_arguments(
        parser,
        "pre-training frames (extxyz, e.g. runs/d2/train_all.extxyz) replayed by the `replay` variant, "
        "forces (and with --replay-energies the energies of its bulk metals and pockets)",
    )
    parser.add_argument("--samples", type=int, default=20, help="posterior samples per prediction")
    parser.add_argument(
        "--device",
        default="cpu",
        help="where the trained variants train (cpu, cuda, cuda:1; default cpu): their leave-one-host-out "
        "refits are one training per DFT host each; at batch 4 an epoch is launch-bound, ~8 s on an H200 as on "
        "a CPU core (BENCHMARKS.md screen_full_cuda)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--train-hosts",
        type=int,
        default=0,
        help="train and anchor on a seeded random subset of this many DFT training hosts (--seed; default 0 = "
        "all): points of a learning curve of the held-out error against the DFT budget (--seed also draws "
        "the replay sample)",
    )
    parser.add_argument("--no-sevenn", action="store_true", help="skip the SevenNet-0 column")
    parser.add_argument(
        "--no-loho",
        action="store_true",
        help="skip the leave-one-host-out refits of the trained variants (one refit per DFT training host "
        "each): their σ is then their own Laplace σ; the offset variants keep theirs",
    )
    parser.add_argument(
        "--laplace-structures",
        type=int,
        default=0,
        help="training structures in each trained variant's Laplace Hessian and evidence (default 0 = all: a "
        "random 200 kept about half of the DFT frames and inflated the noise; session 14)",
    )


def subset_hosts(hosts: list[str], n: int, seed: int) -> set[str]:
    """A seeded random subset of ``n`` of ``hosts`` (``--train-hosts``); the same seed and list give the same
    subset, and a larger ``n`` with the same seed does not always contain a smaller one's (each point of a
    learning curve is its own draw; average over seeds)."""
    import numpy as np

    from structures.common import InputError

    if not 1 <= n <= len(hosts):
        raise InputError(
            f"--train-hosts {n} not allowed; allowed: 1 to {len(hosts)} (the DFT training hosts), 0 = all"
        )
    return set(np.random.default_rng(seed).choice(sorted(hosts), size=n, replace=False).tolist())


def _host_of(atoms) -> str:
    from structures import keys as K

    return str(atoms.info.get(K.HOST) or "")


def _cache_key(triple: dict) -> str:
    """SevenNet-0 cache key: name, settings and geometry (a builder and a validate triple share a name)."""
    return f"{triple['name']}/{triple['settings_hash']}/{triple.get('geometry', '')}"


def _stats(rows: list[dict], key: str, correction: float = 0.24, window: float = 0.2) -> dict[str, Any]:
    """Errors of ``key`` against ``dft_de`` (eV) and, for the top-list target, how many of the structures
    that DFT puts inside the HER window (|ΔGH*| = |ΔE_H + correction| ≤ window) the model keeps on its list
    (its ΔGH* 2σ interval reaches the window; without a σ, its ΔGH* is inside)."""
    import numpy as np

    have = [r for r in rows if r.get(key) is not None]
    if not have:
        return {"n": 0}
    err = np.array([r[key] - r["dft_de"] for r in have])
    out = {
        "n": len(have),
        "mae": float(np.abs(err).mean()),
        "rmse": float(np.sqrt((err**2).mean())),
        "max": float(np.abs(err).max()),
        "mean": float(err.mean()),
    }
    sig = [r.get(key + "_sigma") for r in have]
    if all(s is not None for s in sig):
        z = np.abs(err) / np.maximum(np.array(sig), 1e-12)
        out.update(cov1=float((z <= 1).mean()), cov2=float((z <= 2).mean()), mean_sigma=float(np.mean(sig)))

    def on_list(r: dict) -> bool:
        return abs(r[key] + correction) - 2.0 * float(r.get(key + "_sigma") or 0.0) <= window

    active = [r for r in have if abs(r["dft_de"] + correction) <= window]
    # a wide σ keeps every host on the list: the list's share of all hosts says what recovering them cost
    out.update(
        dft_active=len(active),
        recovered=sum(map(on_list, active)),
        list_fraction=float(np.mean([on_list(r) for r in have])),
    )
    return out


def bootstrap_means(values, n_boot: int = 2000, seed: int = 0):
    """(n_boot,) means of ``values`` (one per host) resampled with replacement, hosts drawn together."""
    import numpy as np

    v = np.asarray(values, float)
    return v[np.random.default_rng(seed).integers(0, v.size, size=(n_boot, v.size))].mean(axis=1)


def bootstrap_mae_ci(abs_err, n_boot: int = 2000, level: float = 0.9, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval (eV) of the mean of ``abs_err`` (one absolute error per host): hosts
    resampled with replacement ``n_boot`` times. With ten hosts the interval is wide; two variants whose
    intervals overlap this much are not told apart by these hosts."""
    import numpy as np

    e = np.asarray(abs_err, float)
    if e.size == 0:
        return float("nan"), float("nan")
    means = bootstrap_means(e, n_boot, seed)
    q = (1.0 - level) / 2.0
    return float(np.quantile(means, q)), float(np.quantile(means, 1.0 - q))


def paired_host_difference(
    err_a: dict[str, float], err_b: dict[str, float], n_boot: int = 10000, level: float = 0.9, seed: int = 0
) -> dict[str, float]:
    """Is variant b better than variant a on the same hosts? ``err_a`` / ``err_b``: signed per-host ΔGH* error
    (eV) by host name. Two per-host MAEs of ten hosts each carry a wide bootstrap interval
    (:func:`bootstrap_mae_ci`), but both are judged on the *same* hosts, so the paired difference
    mean(|b| − |a|) is much tighter. Returns n (hosts in common), mae_a, mae_b, diff (negative: b is better),
    lo / hi (percentile bootstrap interval of diff, hosts resampled together) and p_better (share of resamples
    where b's MAE is lower by more than 1 meV: two copies of one network are a tie, not a win)."""
    import numpy as np

    from structures.common import InputError

    hosts = sorted(set(err_a) & set(err_b))
    if len(hosts) < 2:
        raise InputError(f"only {len(hosts)} host(s) in common; allowed: two or more hosts evaluated by both")
    a = np.abs([err_a[h] for h in hosts])
    b = np.abs([err_b[h] for h in hosts])
    d = b - a
    boot = bootstrap_means(d, n_boot, seed)
    q = (1.0 - level) / 2.0
    return {
        "n": len(hosts),
        "mae_a": float(a.mean()),
        "mae_b": float(b.mean()),
        "diff": float(d.mean()),
        "lo": float(np.quantile(boot, q)),
        "hi": float(np.quantile(boot, 1.0 - q)),
        "p_better": float(np.mean(boot < -1e-3)),
    }


def host_level(rows: list[dict], variants: list[str]) -> tuple[dict[str, Any], list[dict]]:
    """ΔGH* per host when a host has DFT triples at several sites: DFT's is the lowest labelled site's,
    each variant's the lowest of its predictions at those sites, so a variant that ranks the sites wrongly
    pays for it. A host is *site-complete* when its DFT sites include one where H binds to a metal and one
    where it binds to N or C (row key ``site_class``): only then is DFT's minimum not an upper bound that a
    missing site class could lower (on Ir2@2Nb and Ru2@5Na the metal site sat ~1 eV below the N/C one).
    Returns ({variant: n, mae, mean, site_right (share of multi-site hosts where it picks DFT's lowest
    site), n_complete, mae_complete, mae_ci (90 % bootstrap interval over hosts, :func:`bootstrap_mae_ci`)},
    [per host: host, n_sites, complete, dft_de, dft_site, {variant}, {variant}_site])."""
    import numpy as np

    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["host"], []).append(r)
    per_host = []
    for host, rs in sorted(by.items()):
        d = min(rs, key=lambda r: r["dft_de"])
        classes = {r.get("site_class") for r in rs}
        rec: dict[str, Any] = {
            "host": host,
            "n_sites": len(rs),
            "complete": "metal" in classes and bool(classes & {"N", "C"}),
            "dft_de": d["dft_de"],
            "dft_site": d["name"],
        }
        for v in variants:
            have = [r for r in rs if r.get(v) is not None]
            if len(have) == len(rs):
                m = min(have, key=lambda r: r[v])
                rec[v], rec[v + "_site"] = m[v], m["name"]
        per_host.append(rec)
    summary: dict[str, Any] = {}
    multi = [h for h in per_host if h["n_sites"] > 1]
    for v in variants:
        have = [h for h in per_host if v in h]
        if not have:
            continue
        err = np.array([h[v] - h["dft_de"] for h in have])
        m = [h for h in multi if v in h]
        full = np.array([h["complete"] for h in have])
        summary[v] = {
            "n": len(have),
            "n_multi": len(m),
            "mae": float(np.abs(err).mean()),
            "mae_ci": bootstrap_mae_ci(np.abs(err)),
            "mean": float(err.mean()),
            "site_right": float(np.mean([h[v + "_site"] == h["dft_site"] for h in m])) if m else float("nan"),
            "n_complete": int(full.sum()),
            "mae_complete": float(np.abs(err[full]).mean()) if full.any() else float("nan"),
        }
    return summary, per_host


def host_table(summary: dict[str, Any], per_host: list[dict]) -> str:
    """Markdown of :func:`host_level` (empty when no host has more than one labelled site)."""
    if not any(h["n_sites"] > 1 for h in per_host):
        return ""
    t = (
        "\nPer host (ΔGH* is a minimum over sites): hosts with DFT triples at several sites, e.g. the model's "
        "best site and its best site where H binds to a metal (`screen validate --site-classes`), take DFT's "
        "lowest labelled site as the truth and each variant's lowest prediction over the same sites; "
        "'right site': the share of those hosts where the variant picks DFT's lowest site; 'site-complete': "
        "the hosts with DFT at a site where H binds to a metal *and* at one where it binds to N or C. On the "
        "other hosts DFT's ΔGH* is an upper bound (a site class is missing), so their error is not the "
        "error of the screen.\n\n"
        "'90 % interval': a bootstrap over the hosts, how far the MAE of so few hosts can move.\n\n"
        "| model | hosts | MAE (eV) | 90 % interval (eV) | mean error (eV) | right site (hosts with ≥ 2 sites) "
        "| MAE, site-complete hosts (eV) |\n|---|---|---|---|---|---|---|\n"
    )
    for v, m in summary.items():
        right = f"{m['site_right']:.0%} of {m['n_multi']}" if m["n_multi"] else ""
        full = f"{m['mae_complete']:.3f} ({m['n_complete']})" if m.get("n_complete") else ""
        lo, hi = m["mae_ci"]
        t += (
            f"| {v} | {m['n']} | {m['mae']:.3f} | {lo:.2f}–{hi:.2f} | {m['mean']:+.3f} | {right} | {full} |\n"
        )
    shown = list(summary)
    t += (
        "\n| host (≥ 2 DFT sites) | DFT lowest | "
        + " | ".join(shown)
        + " |\n|---|---|"
        + "---|" * len(shown)
        + "\n"
    )

    def site(name: str) -> str:
        return name.rsplit("@", 1)[-1]

    for h in per_host:
        if h["n_sites"] < 2:
            continue
        cells = [f"{h[v]:+.2f} ({site(h[v + '_site'])})" if v in h else "" for v in shown]
        mark = "" if h["complete"] else " ¹"
        t += (
            f"| {h['host']}{mark} | {h['dft_de']:+.2f} ({site(h['dft_site'])}) | "
            + " | ".join(cells)
            + " |\n"
        )
    if not all(h["complete"] for h in per_host if h["n_sites"] > 1):
        t += "\n¹ not site-complete: DFT at several sites of one binding class only.\n"
    return t


def anchored_sigma(model_sigma: float, loho_rms: float) -> float:
    """Predictive σ (eV) of a DFT-anchored ΔE_H: the pre-trained model's own σ at the structure and the RMS
    leave-one-host-out error of the anchoring, added in quadrature. The second term is what a new host
    costs: with few DFT hosts a Laplace posterior fitted on the DFT frames is set by its prior (±10 eV on
    one host), while a held-out-host residual measures the error the anchoring actually makes."""
    import math

    return math.hypot(float(model_sigma), float(loho_rms))


def pretrain_force_mae(posts: dict[str, Any], path: str | None, n: int, seed: int = 0) -> dict[str, float]:
    """{variant: force MAE (eV/Å) at the mean weights against the labels of ``n`` seeded frames of ``path``}
    ({} without ``path``): how far fine-tuning moved a network from its pre-training labels."""
    if not path:
        return {}
    import numpy as np
    from ase.io import read

    from structures.common import InputError

    from .bench_model import _predict

    try:
        frames = read(path, ":")
    except (OSError, ValueError) as exc:
        raise InputError(f"--pretrain-valid {path!r} is not a readable extxyz: {exc}") from exc
    if not frames or n < 1:
        raise InputError(f"--pretrain-valid {path!r} / --pretrain-n {n}: need >= 1 frame")
    idx = np.sort(np.random.default_rng(seed).choice(len(frames), min(n, len(frames)), replace=False))
    sub = [frames[i] for i in idx]
    out = {}
    for name, post in posts.items():
        *_, ft, fp, _ = _predict(post, sub, 16, 1)
        out[name] = float(np.abs(ft - fp).mean())
    return out


def _train_config(args, epochs: int, lr: float, refit: bool, trainable: tuple[str, ...]):
    from potentials.losses import LossConfig
    from potentials.train import TrainConfig

    return TrainConfig(
        epochs=epochs,
        batch_size=args.batch_size,
        lr=lr,
        scheduler="cosine",
        ema_decay=0.9,
        early_stopping_patience=10**6,  # few labels, no held-out frames for early stopping: fixed epochs
        seed=args.seed,
        loss=LossConfig(kind="mse", energy_weight=args.energy_weight, force_weight=args.force_weight),
        refit_e0s=refit,
        trainable=trainable,
    )


def run(args: argparse.Namespace) -> int:
    import hashlib
    import json
    from dataclasses import replace

    import numpy as np

    from potentials.bayes import load_posterior
    from potentials.bayes.fit import fit_posterior, method_config
    from potentials.data import replay_frames
    from potentials.model import ModelConfig, preset
    from screening import labelling as L
    from structures.common import (
        InputError,
        atomic_write_text,
        check_section_name,
        read_host_list,
        write_bench_result,
    )

    from .anchoring import fit_anchor, offset_for, predictive_sigma, site_class
    from .bench_model import calc_triple_de, dft_triples, left_out_note, sevenn_calculator, triple_de
    from .cmd_anchor import check_dft_source, check_prior_arguments
    from .pipeline import default_model_path

    check_dft_source(args)
    check_prior_arguments(args)
    if args.laplace_structures < 0:
        raise InputError(f"--laplace-structures {args.laplace_structures} not allowed; need >= 0 (0 = all)")
    if args.batch_size < 1:
        raise InputError(f"--batch-size {args.batch_size} not allowed; need >= 1")
    from potentials.model import resolve_device

    device = resolve_device(args.device)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    check_section_name(args.section)
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        raise InputError(f"--variants: unknown {bad[0]!r}; allowed: {', '.join(VARIANTS)}")
    heldout = set(read_host_list(args.heldout, "--heldout"))
    model_path = args.model or str(default_model_path())
    sh = L.settings_hash(L.get_engine("gpaw"), L.get_preset(args.preset))
    train_frames = [a for a in L.labelled_frames(args.dft_db, "gpaw", sh) if _host_of(a) not in heldout]
    train_hosts = sorted({h for h in map(_host_of, train_frames) if "@" in h})
    if args.train_hosts:
        keep = subset_hosts(train_hosts, args.train_hosts, args.seed)
        train_frames = [a for a in train_frames if _host_of(a) in keep or "@" not in _host_of(a)]  # H2 stays
        train_hosts = sorted(keep)
    left_out: list[dict] = []
    triples = dft_triples(args.dft_db, sh, left_out=left_out)
    # one held-out triple per host: the model-relaxed (validate) geometry where one exists, so a host with a
    # settings-check triple on the builder's geometry as well is not counted twice
    validated = {t["host"] for t in triples if t.get("geometry") == "validate"}
    test = [
        t
        for t in triples
        if t.get("host") in heldout and (t.get("geometry") == "validate" or t.get("host") not in validated)
    ]
    fit_triples = [t for t in triples if t.get("host") not in heldout]
    if args.train_hosts:
        fit_triples = [t for t in fit_triples if t.get("host") in keep]
    n_struct = sum(len(a) > 2 for a in train_frames)
    if not test:
        raise InputError(
            f"no held-out (host, host+H, H2) triple with settings {args.preset} in {args.dft_db}"
        )
    if n_struct == 0 and any(v in variants for v in TRAINED):
        raise InputError(f"no DFT training structure with settings {args.preset} outside --heldout")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(
        f"DFT {args.preset} ({sh}): {len(train_frames)} training frames ({n_struct} slabs, hosts "
        f"{', '.join(train_hosts)}); "
        f"{len(test)} held-out triples"
    )

    posts: dict[str, Any] = {}
    base = load_posterior(model_path)
    posts["base"] = base
    base_config: ModelConfig = base.config
    trainable = tuple(t.strip() for t in args.trainable.split(",") if t.strip())
    if "replay" in variants and not args.replay:
        raise InputError("the replay variant needs --replay FILE (pre-training frames, extxyz)")
    replayed = (
        replay_frames(
            args.replay,
            args.replay_n,
            args.seed,
            "--replay",
            energies=args.replay_energies,
            energy_weight=args.replay_energy_weight,
            weight=args.replay_weight,
        )
        if "replay" in variants
        else []
    )

    def fit_variant(variant: str, frames: list) -> Any:
        """Fine-tune (``finetune``, ``replay``) or train from scratch (``scratch``) on ``frames``; the work
        folder is keyed by the training hosts, the replayed set and the training settings, so a grown DFT set
        or other settings never resume a run on other data."""
        hosts = sorted({h for h in map(_host_of, frames) if "@" in h})
        tuned = variant in ("finetune", "replay")
        train_config = (
            _train_config(args, args.epochs, args.lr, True, trainable)
            if tuned
            else _train_config(args, args.scratch_epochs, 1e-2, False, ())
        )
        tag = f":{args.replay}:{len(replayed)}:{args.seed}" if variant == "replay" else ""
        if variant == "replay" and args.replay_energies != "none":  # forces-only keys stay as they were
            tag += f":{args.replay_energies}:{args.replay_energy_weight}"
        if variant == "replay" and args.replay_weight != 1.0:  # default-weight keys stay as they were
            tag += f":w{args.replay_weight}"
        tag += ":" + json.dumps(train_config.to_dict(), sort_keys=True)
        key = hashlib.sha1(f"{sh}:{','.join(hosts)}:{len(frames)}{tag}".encode()).hexdigest()[:10]
        return fit_posterior(
            "laplace",
            frames + (replayed if variant == "replay" else []),
            frames,
            base_config if tuned else replace(preset("fast"), elements=base_config.elements),  # every element
            "cpu",
            out / f"{variant}-{key}",
            train_config=train_config,
            config=method_config("laplace", "cpu", max_structures=args.laplace_structures),
            recalibration="none",
            seed=args.seed,
            init_from=model_path if tuned else None,
            device=device,
        )[0]

    for v in TRAINED:
        if v in variants:
            posts[v] = fit_variant(v, train_frames)

    cache_path = out / "sevenn_de.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    missing = any(_cache_key(t) not in cache for t in triples)
    sevenn = sevenn_calculator() if missing and not args.no_sevenn else None

    def evaluate_triples(ts: list[dict]) -> list[dict]:
        rows = []
        for t in ts:
            label = t["name"] + (" [builder]" if t.get("geometry") == "builder" else "")
            row: dict[str, Any] = {
                "name": label,
                "host": t["host"],
                "dft_de": t["dft_de"],
                "site_class": site_class(t["atoms"][1]),
            }
            for name, post in posts.items():
                row[name], row[name + "_sigma"] = triple_de(post, t["atoms"], args.samples, anchored=False)
            key = _cache_key(t)
            if key not in cache and sevenn is not None:
                cache[key] = calc_triple_de(sevenn, t["atoms"])
            if key in cache:
                row["sevenn"] = cache[key]
            rows.append(row)
        return rows

    test_rows = evaluate_triples(test)
    fit_rows = evaluate_triples(fit_triples)
    atomic_write_text(cache_path, json.dumps(cache, indent=1) + "\n")
    # ---- offsets (screening.anchoring): one global, or per metal pair pooled towards it
    fit_hosts = sorted({r["host"] for r in fit_rows})
    anchors: dict[str, dict] = {}
    one_host_offset = float(np.mean([q["dft_de"] - q["base"] for q in fit_rows])) if fit_rows else 0.0
    for v, (pairs, classes) in OFFSET_VARIANTS.items():
        if v not in variants:
            continue
        if len(fit_hosts) >= 2:
            anchors[v] = fit_anchor(
                fit_rows,
                args.kappa if pairs else None,
                args.prior_sigma,
                args.prior_weight,
                site_classes=classes,
                kappa_class=args.kappa_class,
            )
        for r in test_rows + fit_rows:
            if v in anchors:
                off, sig = offset_for(anchors[v], r["host"], r["site_class"])
                r[v], r[v + "_sigma"] = r["base"] + off, anchored_sigma(r["base_sigma"], sig)
            else:  # one training host: its residual, no σ term measurable
                r[v], r[v + "_sigma"] = r["base"] + one_host_offset, r["base_sigma"]
    shift = anchors["offset"]["offset"] if "offset" in anchors else float("nan")
    # ---- the same pair offsets on SevenNet-0's ΔE_H: what anchoring does for a base closer to DFT
    if len(fit_hosts) >= 2 and test_rows and all("sevenn" in r for r in test_rows + fit_rows):
        s_rows = [{**r, "base": r["sevenn"]} for r in fit_rows]
        anchors["sevenn-pair"] = fit_anchor(s_rows, args.kappa, args.prior_sigma, args.prior_weight)
        for r in test_rows + fit_rows:
            off, sig = offset_for(anchors["sevenn-pair"], r["host"])
            r["sevenn-pair"], r["sevenn-pair_sigma"] = r["sevenn"] + off, sig
        if "site-pair" in variants:
            anchors["sevenn-site-pair"] = fit_anchor(
                s_rows, args.kappa, args.prior_sigma, args.prior_weight, True, args.kappa_class
            )
            for r in test_rows + fit_rows:
                off, sig = offset_for(anchors["sevenn-site-pair"], r["host"], r["site_class"])
                r["sevenn-site-pair"], r["sevenn-site-pair_sigma"] = r["sevenn"] + off, sig

    # ---- leave-one-host-out σ of the fitted variants
    loho: dict[str, list[float]] = {v: a["loho_residuals"] for v, a in anchors.items()}
    if len(fit_hosts) >= 2 and not args.no_loho:
        for v in TRAINED:
            if v not in variants:
                continue
            res = []
            for h in fit_hosts:
                post_h = fit_variant(v, [a for a in train_frames if _host_of(a) != h])
                for t in fit_triples:
                    if t.get("host") == h:
                        res.append(
                            t["dft_de"] - triple_de(post_h, t["atoms"], args.samples, anchored=False)[0]
                        )
            loho[v] = res
    loho_sigma = {
        v: predictive_sigma(r, len(fit_hosts), args.prior_sigma, args.prior_weight) for v, r in loho.items()
    }
    loho_sigma.update({v: a["sigma_add"] for v, a in anchors.items()})
    loho_rms = {v: float(np.sqrt(np.mean(np.square(r)))) for v, r in loho.items() if r}
    for v in TRAINED:
        if v not in variants:
            continue
        for r in test_rows + fit_rows:
            r[v + "_sigma_laplace"] = r.get(v + "_sigma")
            r[v + "_sigma"] = (
                anchored_sigma(r["base_sigma"], loho_sigma[v]) if v in loho_sigma else r.get(v + "_sigma")
            )
    shown = (
        [v for v in VARIANTS if v in variants]
        + (["sevenn"] if any("sevenn" in r for r in test_rows) else [])
        + (["sevenn-pair"] if "sevenn-pair" in anchors else [])
        + (["sevenn-site-pair"] if "sevenn-site-pair" in anchors else [])
    )
    summary = {v: _stats(test_rows, v) for v in shown}
    host_summary, host_rows = host_level(test_rows, shown)
    train_summary = {v: _stats(fit_rows, v) for v in shown}
    forgetting = pretrain_force_mae(posts, args.pretrain_valid, args.pretrain_n, args.seed)
    metals = sorted({h.split("2@")[0] for h in train_hosts})
    motifs = sorted({h.split("@")[1] for h in train_hosts})
    core_h = sum(float(a.info.get("wall_s", 0.0) or 0.0) for a in train_frames) / 3600.0

    # ---- figure
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 4.8))
    dft = np.array([r["dft_de"] for r in test_rows])
    marks = {
        "base": "o",
        "offset": "s",
        "pair": "^",
        "finetune": "D",
        "replay": "P",
        "scratch": "v",
        "sevenn": "x",
        "sevenn-pair": "*",
        "site": "<",
        "site-pair": ">",
        "sevenn-site-pair": "h",
    }
    for v in shown:
        y = np.array([r.get(v, np.nan) for r in test_rows])
        yerr = np.array([2 * r.get(v + "_sigma", 0.0) for r in test_rows]) if v != "sevenn" else None
        ax.errorbar(
            dft, y, yerr=yerr, fmt=marks[v], ms=5, capsize=2, label=f"{v} (MAE {summary[v]['mae']:.2f})"
        )
    lo = min(dft.min(), np.nanmin([r.get(v, np.nan) for r in test_rows for v in shown])) - 0.2
    hi = max(dft.max(), np.nanmax([r.get(v, np.nan) for r in test_rows for v in shown])) + 0.2
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax.set(
        xlabel="DFT ΔE_H (eV, plane-wave PBE)", ylabel="predicted ΔE_H (eV), bars 2σ", title="held-out hosts"
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig_path = Path(f"benchmarks/figures/{args.section}_parity.png")
    fig_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(fig_path, dpi=120)
    plt.close(fig)

    def fmt(v: float | None, sig: float | None = None) -> str:
        if v is None:
            return ""
        return f"{v:+.3f}" + (f" ± {sig:.3f}" if sig is not None else "")

    head = "| held-out structure | DFT | " + " | ".join(shown) + " |\n|---|---|" + "---|" * len(shown) + "\n"
    body = "".join(
        f"| {r['name']} | {r['dft_de']:+.3f} | "
        + " | ".join(fmt(r.get(v), r.get(v + "_sigma")) for v in shown)
        + " |\n"
        for r in test_rows
    )

    def summary_table(s: dict) -> str:
        t = (
            "| model | n | MAE (eV) | RMSE (eV) | max (eV) | mean error (eV) | mean σ (eV) | 1σ / 2σ coverage | "
            "DFT-active kept (list share) |\n|---|---|---|---|---|---|---|---|---|\n"
        )
        for v, m in s.items():
            if not m.get("n"):
                continue
            cov = f"{m['cov1']:.2f} / {m['cov2']:.2f}" if "cov2" in m else ""
            kept = f"{m['recovered']} / {m['dft_active']}" + (
                f" ({m['list_fraction']:.0%})" if "list_fraction" in m else ""
            )
            sig = f"{m['mean_sigma']:.3g}" if "mean_sigma" in m else ""
            t += (
                f"| {v} | {m['n']} | {m['mae']:.3f} | {m['rmse']:.3f} | {m['max']:.3f} | {m['mean']:+.3f} | "
                f"{sig} | {cov} | {kept} |\n"
            )
        return t

    cmd = (
        f"screen bench anchor --model {model_path} --dft-db {args.dft_db} --preset {args.preset} --heldout "
        f"{args.heldout} --variants {','.join(variants)} --epochs {args.epochs} --lr {args.lr:g} "
        f"--energy-weight {args.energy_weight:g} --force-weight {args.force_weight:g} --kappa {args.kappa:g} "
        f"--prior-sigma {args.prior_sigma:g} --prior-weight {args.prior_weight:g}"
        + (f" --kappa-class {args.kappa_class:g}" if args.kappa_class != 1.0 else "")
        + (f" --trainable {args.trainable}" if args.trainable else "")
        + (" --no-loho" if args.no_loho else "")
        + (" --no-sevenn" if args.no_sevenn else "")
        + (f" --batch-size {args.batch_size}" if args.batch_size != 4 else "")
        + (f" --device {args.device}" if args.device != "cpu" else "")
        + (f" --train-hosts {args.train_hosts}" if args.train_hosts else "")
        + (f" --seed {args.seed}" if args.seed or args.train_hosts else "")
        + (f" --replay {args.replay} --replay-n {args.replay_n}" if "replay" in variants else "")
        + (
            f" --replay-energies {args.replay_energies} --replay-energy-weight {args.replay_energy_weight:g}"
            if "replay" in variants and args.replay_energies != "none"
            else ""
        )
        + (
            f" --replay-weight {args.replay_weight:g}"
            if "replay" in variants and args.replay_weight != 1.0
            else ""
        )
        + (
            f" --pretrain-valid {args.pretrain_valid} --pretrain-n {args.pretrain_n}"
            if args.pretrain_valid
            else ""
        )
    )
    table = (
        f"DFT budget: {len(train_frames)} training frames ({n_struct} slabs + H2) at `{args.preset}` "
        f"({core_h:.1f} core-hours), metals {', '.join(metals) or 'none'}, motifs {', '.join(motifs) or 'none'}; "
        f"{len(test)} held-out triples (hosts in `{args.heldout}`, never trained on by any variant). "
        "ΔE_H single points at the DFT geometries, so the error equals the ΔGH* error. DFT-active kept: of "
        "the held-out structures with DFT |ΔGH*| ≤ 0.2 eV (ΔGH* = ΔE_H + 0.24 eV), those whose ΔGH* 2σ "
        "interval reaches that window (target ≥ 80 %); in brackets the share of all held-out structures whose "
        "2σ interval reaches it, i.e. how long the list is (a σ wide enough keeps every host). "
        + (left_out_note(left_out) + " " if left_out else "")
        + (
            "σ of the anchored variants = hypot(base model σ, σ_anchor): the leave-one-host-out errors of the "
            f"anchoring over the {len(fit_hosts)} DFT training hosts, updating a prior host-to-host spread of "
            f"{args.prior_sigma:g} eV worth {args.prior_weight:g} hosts (screening.anchoring.predictive_sigma): "
            + ", ".join(
                f"{v} {x:.3f} eV (LOHO RMS {loho_rms.get(v, float('nan')):.3f})"
                for v, x in loho_sigma.items()
            )
            + (
                "); with --no-loho the fine-tuned and DFT-only posteriors show their own Laplace σ, fitted on "
                "the DFT frames alone (no leave-one-host-out refits).\n\n"
                if args.no_loho
                else "); the Laplace σ of the fine-tuned and DFT-only posteriors, fitted on the DFT frames "
                "alone, stay in the JSON (`*_sigma_laplace`).\n\n"
            )
            if loho_sigma
            else "With fewer than 2 DFT training hosts there is no leave-one-host-out σ: the offset variant "
            "carries the base σ, the fine-tuned and DFT-only posteriors their Laplace σ fitted on the DFT "
            "frames alone (read their coverage together with their mean σ).\n\n"
        )
        + summary_table(summary)
        + host_table(host_summary, host_rows)
        + "".join(
            f"\n`{v}`: global offset {a['offset']:+.3f} eV"
            + (
                " (pairs: " + ", ".join(f"{p} {o:+.3f}" for p, o in a["pair_offsets"].items()) + ")"
                if a["pair_offsets"]
                else ""
            )
            + (
                " (site classes: "
                + ", ".join(
                    f"H on {c} {o:+.3f} (σ {a.get('class_sigma', {}).get(c, float('nan')):.3f})"
                    for c, o in a["class_offsets"].items()
                )
                + "; pair deviations: "
                + (", ".join(f"{p} {o:+.3f}" for p, o in a.get("pair_deviations", {}).items()) or "none")
                + ")"
                if a.get("class_offsets")
                else ""
            )
            + f", leave-one-host-out σ {a['sigma_add']:.3f} eV ({a['sigma_add_covered']:.3f} eV for labelled pairs).\n"
            for v, a in anchors.items()
        )
        + (
            "`sevenn-pair` is SevenNet-0's ΔE_H with pair offsets fitted the same way on the same training hosts "
            "(its σ is the anchoring σ alone: SevenNet-0 has none).\n"
            if "sevenn-pair" in anchors
            else ""
        )
        + "\n"
        + head
        + body
        + (
            f"\nForgetting check: force MAE against the pre-training labels (SevenNet-0) on {args.pretrain_n} "
            f"held-out pre-training frames of `{args.pretrain_valid}` (offset and pair share the base network): "
            + ", ".join(f"{v} {x:.3f} eV/Å" for v, x in forgetting.items())
            + ". A network that moved far from them relaxes structures outside the DFT set badly.\n"
            if forgetting
            else ""
        )
        + "\nOn the training triples (fit quality, not a test):\n\n"
        + summary_table(train_summary)
        + f"\n![anchor parity](benchmarks/figures/{args.section}_parity.png)\n"
    )
    result = {
        "settings_hash": sh,
        "model": model_path,
        "heldout": sorted(heldout),
        "n_train_frames": len(train_frames),
        "n_train_slabs": n_struct,
        "train_metals": metals,
        "train_motifs": motifs,
        "train_core_hours": core_h,
        "offset_shift": shift,
        "anchors": anchors,
        "loho_rms": loho_rms,
        "sigma_anchor": loho_sigma,
        "loho_residuals": loho,
        "summary": summary,
        "host_summary": host_summary,
        "hosts": host_rows,
        "train_summary": train_summary,
        "test": test_rows,
        "train": fit_rows,
        "pretrain_force_mae": forgetting,
    }
    if args.section != "anchor":
        cmd += f" --section {args.section}"
    write_bench_result(args.section, result, cmd, table)
    print(summary_table(summary))
    return 0
