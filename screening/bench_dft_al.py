"""``screen bench dft-al`` (issue 10): DFT core-hours that uncertainty-driven labelling saves, measured
retrospectively on the plane-wave labels already in the store.

Every host with a complete (host, host+H, H2) triple at one settings hash is a candidate. Each of
``--splits`` seeded random splits puts ``--test-fraction`` of the hosts in a test set and the rest in a pool.
A strategy orders the pool; after each acquired host the model is anchored (``screen anchor``'s pair
offsets, screening.anchoring) on the acquired hosts and judged on the test hosts (ΔE_H MAE against DFT at the
DFT geometries, so the ΔGH* error; a host's error is the mean over its triples). ``--anchoring`` picks the
offsets: ``site-pair`` (default, what the shipped model uses: one offset per site class, H on a metal / N / C,
with metal-pair deviations) or ``pair`` (one offset per metal pair). Strategies, from the model's prediction on
each host:

- ``random``: a seeded random order;
- ``pair``: random, but a host of a metal pair without a DFT label first (diversity without uncertainty);
- ``sigma``: the largest epistemic σ of ΔE_H first (energy-uncertainty sampling);
- ``bald``: the largest ½ ln(1 + σ_ep² / σ_al²) first (BALD for a Gaussian predictive; ``--select bald``);
- ``bald-pair``: the same, but a host of a metal pair without a DFT label first (``--select bald:per-metal``
  with ``--skip-labelled-pairs``, the rule `screen validate` uses for anchoring labels).

The labels that each strategy needs to reach random labelling's MAE at ``--budget`` hosts, and the DFT
core-hours of those labels (the measured wall time of their two single points), give the saving. With few
DFT hosts the numbers are noisy: the table gives the spread over splits.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from typing import Any

STRATEGIES = ("random", "pair", "sigma", "bald", "bald-pair")
ANCHORINGS = ("site-pair", "pair")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .cmd_anchor import add_dft_source_arguments

    add_dft_source_arguments(parser, "posterior whose uncertainty orders the labels")
    parser.add_argument("--splits", type=int, default=500, help="random pool/test splits (default 500)")
    parser.add_argument(
        "--test-fraction", type=float, default=0.4, help="hosts per split in the test set (default 0.4)"
    )
    parser.add_argument(
        "--budget",
        type=int,
        default=None,
        help="labels (hosts) of random labelling whose MAE is the target (default: half the pool, rounded up)",
    )
    parser.add_argument(
        "--strategies",
        default=",".join(STRATEGIES),
        help=f"comma list of {', '.join(STRATEGIES)} (default all)",
    )
    parser.add_argument(
        "--anchoring",
        default="site-pair",
        help="offsets fitted on the acquired hosts: site-class offsets with pair deviations (default, as "
        "`screen anchor --site-classes`) or pair offsets: " + ", ".join(ANCHORINGS),
    )
    parser.add_argument("--kappa", type=float, default=1.0, help="pooling of the pair offsets (default 1)")
    parser.add_argument(
        "--kappa-class", type=float, default=1.0, help="pooling of the site-class offsets (default 1)"
    )
    parser.add_argument("--samples", type=int, default=20, help="posterior samples per ΔE_H (default 20)")
    parser.add_argument(
        "--target-mae",
        type=float,
        default=0.15,
        help="ΔGH* MAE (eV) that the learning-curve extrapolation is asked about (default 0.15, issue 10)",
    )
    parser.add_argument("--seed", type=int, default=0)


def host_rows(triples: Sequence[dict], post, n_samples: int) -> list[dict[str, Any]]:
    """One row per host: mean DFT and model ΔE_H over its triples (eV), the model's epistemic and aleatoric
    σ (eV, root-mean-square over triples), the BALD score, the DFT core-hours of its single points and
    ``triples``: per triple ``host``, ``dft_de``, ``base`` (eV) and ``site_class`` (screening.anchoring)."""
    import numpy as np

    from .anchoring import pair_of, site_class
    from .bench_model import triple_de_parts

    by_host: dict[str, list] = {}
    for t in triples:
        if t.get("host") and "@" in t["host"]:
            by_host.setdefault(t["host"], []).append(t)
    rows = []
    for host in sorted(by_host):
        parts = [
            (t["dft_de"], *triple_de_parts(post, t["atoms"], n_samples), t["core_s"]) for t in by_host[host]
        ]
        dft, base, ep, al, core_s = (np.array(x, float) for x in zip(*parts))
        triples = [
            {"host": host, "dft_de": float(d), "base": float(b), "site_class": site_class(t["atoms"][1])}
            for t, d, b in zip(by_host[host], dft, base)
        ]
        ep_rms, al_rms = float(np.sqrt(np.mean(ep**2))), float(np.sqrt(np.mean(al**2)))
        rows.append(
            {
                "host": host,
                "pair": pair_of(host),
                "dft_de": float(dft.mean()),
                "base": float(base.mean()),
                "sigma_ep": ep_rms,
                "sigma_al": al_rms,
                "bald": 0.5 * math.log1p((ep_rms / max(al_rms, 1e-6)) ** 2),
                "core_h": float(core_s.max())
                / 3600.0,  # one triple's single points (repeats are not new labels)
                "triples": triples,
            }
        )
    return rows


def anchored_mae(
    acquired: Sequence[dict],
    test: Sequence[dict],
    kappa: float,
    site_classes: bool = False,
    kappa_class: float = 1.0,
) -> float:
    """ΔE_H MAE (eV) on the ``test`` hosts of the model anchored on the ``acquired`` host rows (each with
    ``triples``, :func:`host_rows`): none, the base model; one, its mean residual as a global offset; more,
    screening.anchoring's pair offsets, or with ``site_classes`` its site-class offsets and pair deviations.
    A host's error is the mean absolute error over its triples; the MAE the mean over hosts."""
    import numpy as np

    from .anchoring import fit_anchor, offset_for

    fit_rows = [t for r in acquired for t in r["triples"]]
    anchor = None
    one = 0.0
    if len(acquired) == 1:
        one = float(np.mean([t["dft_de"] - t["base"] for t in fit_rows]))
    elif len(acquired) > 1:
        anchor = fit_anchor(fit_rows, kappa, site_classes=site_classes, kappa_class=kappa_class)

    def offset(t: dict) -> float:
        return offset_for(anchor, t["host"], t["site_class"])[0] if anchor else one

    errors = [np.mean([abs(t["base"] + offset(t) - t["dft_de"]) for t in r["triples"]]) for r in test]
    return float(np.mean(errors))


def acquisition_order(pool: Sequence[dict], strategy: str, rng) -> list[int]:
    """Indices of ``pool`` in the order ``strategy`` labels them (ties keep the pool order)."""
    n = len(pool)
    if strategy in ("random", "pair"):
        shuffled = [int(i) for i in rng.permutation(n)]
        return shuffled if strategy == "random" else _pairs_first(pool, shuffled)
    if strategy == "sigma":
        return sorted(range(n), key=lambda i: -pool[i]["sigma_ep"])
    by_bald = sorted(range(n), key=lambda i: -pool[i]["bald"])
    if strategy == "bald":
        return by_bald
    if strategy == "bald-pair":
        return _pairs_first(pool, by_bald)
    raise ValueError(f"unknown strategy {strategy!r}")


def _pairs_first(pool: Sequence[dict], ranked: Sequence[int]) -> list[int]:
    """``ranked`` re-ordered greedily: the best-ranked host of a metal pair not yet labelled, else the
    best-ranked host left."""
    order: list[int] = []
    seen: set[str] = set()
    left = list(ranked)
    while left:
        pick = next((i for i in left if pool[i]["pair"] not in seen), left[0])
        order.append(pick)
        seen.add(pool[pick]["pair"])
        left.remove(pick)
    return order


def learning_curve_floor(curve: Sequence[float], start: int = 2) -> dict[str, float | None]:
    """Least-squares fit MAE(n) = a + b / sqrt(n) to a mean learning curve (``curve[n]`` eV after n labelled
    hosts) from ``n = start`` on: ``floor`` a (eV) is where more hosts of the same kind take the anchoring, if
    the scatter of the host errors around the offsets is what is left; ``slope`` b (eV). An extrapolation
    from a few points, to read as an order of magnitude (:func:`hosts_for_mae` inverts it)."""
    import numpy as np

    n = np.arange(len(curve), dtype=float)[start:]
    y = np.asarray(curve, float)[start:]
    if n.size < 2:
        raise ValueError(f"a learning-curve fit needs >= 2 points from n = {start}, got {n.size}")
    A = np.stack([np.ones_like(n), 1.0 / np.sqrt(n)], axis=1)
    (a, b), *_ = np.linalg.lstsq(A, y, rcond=None)
    return {"floor": float(a), "slope": float(b), "start": float(start)}


def hosts_for_mae(fit: dict[str, float | None], target: float) -> float | None:
    """Hosts at which the fitted curve a + b/sqrt(n) reaches ``target`` eV; None when the floor a is not
    below it (no number of hosts does)."""
    a, b = float(fit["floor"]), float(fit["slope"])
    if a >= target:
        return None
    if b <= 0:
        return 0.0
    return (b / (target - a)) ** 2


def rank_correlation(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation of ``x`` and ``y`` (average ranks for ties); NaN below 3 points."""
    import numpy as np
    from scipy.stats import spearmanr

    if len(x) < 3:
        return float("nan")
    return float(spearmanr(np.asarray(x, float), np.asarray(y, float)).statistic)


def simulate(
    rows: Sequence[dict],
    strategies: Sequence[str],
    splits: int,
    test_fraction: float,
    kappa: float,
    seed: int = 0,
    site_classes: bool = False,
    kappa_class: float = 1.0,
) -> dict[str, Any]:
    """Learning curves over seeded splits: ``mae[s]`` (splits, n_pool + 1) eV and ``core_h[s]`` (splits,
    n_pool + 1) cumulative DFT core-hours after k = 0..n_pool acquired hosts."""
    import numpy as np

    n = len(rows)
    n_test = min(max(1, int(round(test_fraction * n))), n - 1)
    n_pool = n - n_test
    rng = np.random.default_rng(seed)
    mae = {s: np.zeros((splits, n_pool + 1)) for s in strategies}
    core = {s: np.zeros((splits, n_pool + 1)) for s in strategies}
    for k in range(splits):
        perm = rng.permutation(n)
        test = [rows[i] for i in perm[:n_test]]
        pool = [rows[i] for i in perm[n_test:]]
        for s in strategies:
            order = acquisition_order(pool, s, rng)
            acquired = [pool[i] for i in order]
            for j in range(n_pool + 1):
                mae[s][k, j] = anchored_mae(acquired[:j], test, kappa, site_classes, kappa_class)
            core[s][k, 1:] = np.cumsum([r["core_h"] for r in acquired])
    return {"n_test": n_test, "n_pool": n_pool, "mae": mae, "core_h": core}


def savings(sim: dict[str, Any], budget: int) -> dict[str, dict[str, float | None]]:
    """Per strategy: labels and mean core-hours needed to reach random labelling's mean MAE at ``budget``
    labels (None when the strategy never does), and the core-hours saved against random at ``budget``."""

    target = float(sim["mae"]["random"][:, budget].mean())
    random_core = float(sim["core_h"]["random"][:, budget].mean())
    out: dict[str, dict[str, float | None]] = {}
    for s, m in sim["mae"].items():
        curve = m.mean(axis=0)
        hit = [j for j in range(len(curve)) if curve[j] <= target + 1e-12]
        if not hit:
            out[s] = {"labels": None, "core_h": None, "saved_core_h": None, "saved_fraction": None}
            continue
        j = hit[0]
        ch = float(sim["core_h"][s][:, j].mean())
        out[s] = {
            "labels": j,
            "core_h": ch,
            "saved_core_h": random_core - ch,
            "saved_fraction": (random_core - ch) / random_core if random_core > 0 else None,
        }
    out["_target"] = {"mae": target, "budget": budget, "random_core_h": random_core}
    return out


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from potentials.bayes import load_posterior
    from screening import labelling as L
    from structures.common import InputError, write_bench_result

    from .bench_model import dft_triples, left_out_note
    from .cmd_anchor import check_dft_source
    from .pipeline import default_model_path

    check_dft_source(args)
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    bad = [s for s in strategies if s not in STRATEGIES]
    if bad or not strategies:
        raise InputError(f"--strategies: unknown {bad[0] if bad else ''!r}; allowed: {', '.join(STRATEGIES)}")
    if "random" not in strategies:
        strategies.insert(0, "random")  # the reference every saving is measured against
    if args.anchoring not in ANCHORINGS:
        raise InputError(f"--anchoring: unknown {args.anchoring!r}; allowed: {', '.join(ANCHORINGS)}")
    if not args.target_mae > 0:
        raise InputError(f"--target-mae {args.target_mae} not allowed; allowed: a MAE > 0 eV")
    if args.splits < 1:
        raise InputError(f"--splits {args.splits} not allowed; allowed: an integer >= 1")
    if not 0.0 < args.test_fraction < 1.0:
        raise InputError(f"--test-fraction {args.test_fraction} not allowed; allowed: between 0 and 1")
    model_path = args.model or str(default_model_path())
    post = load_posterior(model_path)
    sh = L.settings_hash(L.get_engine("gpaw"), L.get_preset(args.preset))
    left_out: list[dict] = []
    rows = host_rows(dft_triples(args.dft_db, sh, left_out=left_out), post, args.samples)
    if len(rows) < 4:
        raise InputError(
            f"{len(rows)} host(s) with a complete {args.preset} triple in {args.dft_db}; need >= 4 for a split"
        )
    site_classes = args.anchoring == "site-pair"
    sim = simulate(
        rows,
        strategies,
        args.splits,
        args.test_fraction,
        args.kappa,
        args.seed,
        site_classes,
        args.kappa_class,
    )
    n_pool = sim["n_pool"]
    budget = args.budget if args.budget is not None else math.ceil(n_pool / 2)
    if not 1 <= budget <= n_pool:
        raise InputError(f"--budget {budget} not allowed; allowed: 1 to the pool size {n_pool}")
    save = savings(sim, budget)
    target = save.pop("_target")
    floor: dict[str, Any] | None = None
    if n_pool >= 4:  # >= 3 points from 2 hosts on
        floor = learning_curve_floor(sim["mae"]["random"].mean(axis=0))
        floor["hosts_for_target"] = hosts_for_mae(floor, args.target_mae)
        floor["target"] = args.target_mae
    abs_err = [abs(r["dft_de"] - r["base"]) for r in rows]
    rho = {k: rank_correlation([r[k] for r in rows], abs_err) for k in ("sigma_ep", "bald")}

    import matplotlib

    matplotlib.use("Agg")
    from pathlib import Path

    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9.5, 3.8))
    ks = np.arange(n_pool + 1)
    for s in strategies:
        m = sim["mae"][s]
        se = m.std(axis=0) / math.sqrt(args.splits)
        ax1.errorbar(ks, m.mean(axis=0), yerr=se, marker="o", ms=3, capsize=2, label=s)
        ax2.plot(sim["core_h"][s].mean(axis=0), m.mean(axis=0), marker="o", ms=3, label=s)
    for ax in (ax1, ax2):
        ax.axhline(target["mae"], color="k", ls=":", lw=0.8)
        ax.set_ylabel("ΔE_H MAE on test hosts (eV)")
        ax.legend(fontsize=7)
    ax1.set_xlabel("DFT hosts labelled")
    ax2.set_xlabel("DFT core-hours")
    fig.suptitle(f"retrospective DFT labelling, {args.splits} splits of {len(rows)} hosts", fontsize=9)
    fig.tight_layout()
    fig_path = Path("benchmarks/figures/dft_al.png")
    fig_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(fig_path, dpi=120)
    plt.close(fig)

    sweep = {b: savings(sim, b) for b in range(1, n_pool)}
    others = [s for s in strategies if s != "random"]
    by_budget = (
        "| random's budget (hosts) | its MAE (eV) | its core-hours | "
        + " | ".join(f"{s}: hosts (core-h)" for s in others)
        + " |\n|---|---|---|"
        + "---|" * len(others)
        + "\n"
    )
    for b, sv in sweep.items():
        t = sv["_target"]
        cells = [
            "not reached" if sv[s]["labels"] is None else f"{sv[s]['labels']} ({sv[s]['core_h']:.1f})"
            for s in others
        ]
        by_budget += f"| {b} | {t['mae']:.3f} | {t['random_core_h']:.1f} | " + " | ".join(cells) + " |\n"
    curve = "| hosts labelled | " + " | ".join(strategies) + " |\n|---|" + "---|" * len(strategies) + "\n"
    for j in range(n_pool + 1):
        cells = [
            f"{sim['mae'][s][:, j].mean():.3f} ± {sim['mae'][s][:, j].std():.3f} "
            f"({sim['core_h'][s][:, j].mean():.1f} h)"
            for s in strategies
        ]
        curve += f"| {j} | " + " | ".join(cells) + " |\n"
    summ = "| strategy | hosts to reach the target | their core-hours | saved against random (core-h) |\n"
    summ += "|---|---|---|---|\n"
    for s in strategies:
        v = save[s]
        if v["labels"] is None:
            summ += f"| {s} | not reached | | |\n"
        else:
            frac = f" ({100 * v['saved_fraction']:.0f} %)" if v["saved_fraction"] is not None else ""
            summ += f"| {s} | {v['labels']} | {v['core_h']:.1f} | {v['saved_core_h']:+.1f}{frac} |\n"
    if floor is None:
        floor_text = f"No extrapolation: a pool of {n_pool} hosts gives fewer than 3 points from 2 hosts on."
    else:
        reach = (
            f"reaches {args.target_mae:g} eV at about {floor['hosts_for_target']:.0f} hosts"
            if floor["hosts_for_target"] is not None
            else f"never reaches {args.target_mae:g} eV however many hosts are labelled"
        )
        floor_text = (
            f"Extrapolation: MAE(n) = a + b/√n fitted to random labelling's mean curve from 2 hosts on gives "
            f"a = {floor['floor']:.3f} eV, b = {floor['slope']:.3f} eV: anchoring this network with these "
            f"offsets {reach}. An order of magnitude from {n_pool - 1} points, not a measurement; what it says "
            "is that offsets on a fixed network level off, and a lower MAE needs a network trained on DFT "
            "energies and forces."
        )
    hosts = ", ".join(r["host"] for r in rows)
    n_triples = sum(len(r["triples"]) for r in rows)
    anchoring_text = (
        f"site-class offsets (H on a metal / N / C, κ_class {args.kappa_class:g}) and metal-pair deviations "
        f"(κ {args.kappa:g})"
        if site_classes
        else f"pair offsets (κ {args.kappa:g})"
    )
    table = (
        f"{len(rows)} hosts with a complete `{args.preset}` triple ({hosts}); {args.splits} seeded splits into "
        f"{sim['n_test']} test and {n_pool} pool hosts. After each acquired host the model `{model_path}` is "
        f"anchored with {anchoring_text} on the acquired hosts and judged on the test hosts "
        "(ΔE_H MAE against DFT at the DFT geometries = the ΔGH* error; a host's error is the mean over its "
        f"{n_triples} triples). Target: random labelling's mean MAE "
        f"with {budget} hosts, {target['mae']:.3f} eV at {target['random_core_h']:.1f} core-hours. "
        "Curves: mean ± spread over splits (mean core-hours of the labels in parentheses). A retrospective on "
        "the labels that exist: the pool is small, so read the spread. Does the model's uncertainty know "
        f"its DFT error? Spearman rank correlation with |DFT − model| over the {len(rows)} hosts: epistemic σ "
        f"{rho['sigma_ep']:+.2f}, BALD {rho['bald']:+.2f} (epistemic σ "
        f"{min(r['sigma_ep'] for r in rows):.2f}–{max(r['sigma_ep'] for r in rows):.2f} eV, errors "
        f"{min(abs_err):.2f}–{max(abs_err):.2f} eV).\n\n"
        + (left_out_note(left_out) + "\n\n" if left_out else "")
        + summ
        + "\nThe same at every budget of random labelling (hosts each order needs to reach random's MAE):\n\n"
        + by_budget
        + "\nLearning curves:\n\n"
        + curve
        + f"\n{floor_text}\n"
        + "\n![dft al](benchmarks/figures/dft_al.png)\n"
    )
    cmd = (
        f"screen bench dft-al --model {model_path} --dft-db {args.dft_db} --preset {args.preset} "
        f"--splits {args.splits} --test-fraction {args.test_fraction:g} --budget {budget} "
        f"--strategies {','.join(strategies)} --anchoring {args.anchoring} --kappa {args.kappa:g} "
        f"--kappa-class {args.kappa_class:g} --target-mae {args.target_mae:g} --seed {args.seed}"
    )
    result = {
        "model": model_path,
        "settings_hash": sh,
        "anchoring": args.anchoring,
        "hosts": rows,
        "n_test": sim["n_test"],
        "n_pool": n_pool,
        "budget": budget,
        "target": target,
        "savings": save,
        "savings_by_budget": {
            str(b): {k: v for k, v in sv.items() if k != "_target"} | {"target": sv["_target"]}
            for b, sv in sweep.items()
        },
        "spearman_abs_error": rho,
        "learning_curve_fit": floor,
        "mae_mean": {s: sim["mae"][s].mean(axis=0).tolist() for s in strategies},
        "mae_std": {s: sim["mae"][s].std(axis=0).tolist() for s in strategies},
        "core_h_mean": {s: sim["core_h"][s].mean(axis=0).tolist() for s in strategies},
    }
    write_bench_result("dft_al", result, cmd, table)
    print(summ)
    return 0
