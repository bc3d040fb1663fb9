"""Does a ΔGH* σ factor fitted on the held-out *calibration* hosts' DFT make σ cover the *test* hosts' errors?

benchmarks/heldout_hosts.txt splits the hosts no shipped model trained on into test hosts (the ΔGH* MAE is
reported on them) and calibration hosts (the σ factor is meant to be fitted on them). This script runs that
protocol on the plane-wave DFT triples at the model-relaxed geometries (``screen validate`` rows; geometry
failures left out as in every DFT benchmark): for each NAME=CHECKPOINT it predicts ΔE_H and its σ as the
screen reports them (:func:`screening.bench_model.triple_de`), fits the factor on the calibration triples
(:func:`screening.cmd_anchor.fit_sigma_factor`, the one `screen anchor --sigma-only` writes, with its
leave-one-host-out coverage), and reports the test triples' and test hosts' 1σ / 2σ coverage with the
model's own σ and with the fitted factor, their Gaussian NLL and miscalibration area
(:mod:`potentials.calibration`) and the Spearman correlation of |error| with σ. Per host: DFT's lowest
labelled site against the model's lowest prediction over the same sites, with that site's σ.

Then, over every held-out triple (calibration and test together), each model's own-σ coverage, RMS z and
per-host Gaussian NLL (mean over a host's triples, then over hosts), and for every model after the first the
paired per-host NLL difference against the first with a 90 % bootstrap interval over hosts.

Decision rule (written down in session 24, before the last two calibration hosts had DFT): the product
applies the fitted factor only if, on the test triples, it lowers both the Gaussian NLL and the
miscalibration area against the model's own σ. The script prints that verdict per model.

Usage:
  OMP_NUM_THREADS=1 python benchmarks/sigma_calibration.py v0.5.1=potentials/models/default.pt \
      [step21=runs/anchor_s21/replay-*/posterior.pt] [--labels dft/labels.db] [--hosts-file
      benchmarks/heldout_hosts.txt] [--out benchmarks/results/sigma_calibration.json]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np


def read_split(path: str) -> dict[str, list[str]]:
    """{'test': [...], 'calibration': [...]} from a held-out host file whose comment lines name the section
    ('# test hosts ...', '# calibration hosts ...'); a host before any such comment is refused."""
    split: dict[str, list[str]] = {"test": [], "calibration": []}
    section = None
    for line in Path(path).read_text().splitlines():
        text, _, comment = line.partition("#")
        low = comment.lower()
        if "calibration hosts" in low:
            section = "calibration"
        elif "test hosts" in low:
            section = "test"
        words = text.split()
        if words and section is None:
            raise SystemExit(f"{path}: hosts {words} before a '# test hosts' / '# calibration hosts' line")
        if words:
            split[section].extend(words)
    return split


def coverage(z) -> list[float]:
    """Shares of |z| <= 1 and <= 2."""
    z = np.abs(np.asarray(z, dtype=float))
    return [float(np.mean(z <= 1.0)), float(np.mean(z <= 2.0))] if z.size else [float("nan")] * 2


def calibration_scores(rows: list[dict], factor: float = 1.0) -> dict:
    """Gaussian NLL (nats per triple) and miscalibration area (0..0.5) of ``rows`` (dft_de, base, sigma) with
    σ scaled by ``factor``; nan for no rows."""
    from potentials.calibration import gaussian_nll, miscalibration_area

    if not rows:
        return {"nll": float("nan"), "miscalibration_area": float("nan")}
    y = np.array([r["dft_de"] for r in rows])
    mu = np.array([r["base"] for r in rows])
    sig = factor * np.array([r["sigma"] for r in rows])
    return {"nll": gaussian_nll(y, mu, sig), "miscalibration_area": miscalibration_area(y, mu, sig)}


def factor_verdict(own: dict, fitted: dict) -> bool:
    """The session-24 rule: apply the fitted factor only if it lowers both the test NLL and the test
    miscalibration area."""
    return fitted["nll"] < own["nll"] and fitted["miscalibration_area"] < own["miscalibration_area"]


def host_nll(rows: list[dict]) -> dict[str, float]:
    """Gaussian NLL (nats) of each host, the mean over its triples of rows (dft_de, base, sigma)."""
    from potentials.calibration import gaussian_nll

    hosts = sorted({r["host"] for r in rows})
    out = {}
    for h in hosts:
        rs = [r for r in rows if r["host"] == h]
        out[h] = gaussian_nll([r["dft_de"] for r in rs], [r["base"] for r in rs], [r["sigma"] for r in rs])
    return out


def paired_nll(a: dict[str, float], b: dict[str, float], n_boot: int = 5000, seed: int = 0) -> dict:
    """Mean per-host NLL difference b − a over the hosts both have (negative: b better), its 90 % percentile
    bootstrap interval (hosts resampled together) and the share of resamples where b is lower."""
    from screening.bench_anchor import bootstrap_means

    hosts = sorted(set(a) & set(b))
    d = np.array([b[h] - a[h] for h in hosts])
    boot = bootstrap_means(d, n_boot, seed)
    return {"n": len(hosts), "diff": float(d.mean()), "lo": float(np.quantile(boot, 0.05)),
            "hi": float(np.quantile(boot, 0.95)), "p_lower": float(np.mean(boot < 0))}  # fmt: skip


def per_host(rows: list[dict]) -> list[dict]:
    """One entry per host: DFT's lowest labelled site (dft_de) and the model's lowest prediction over the same
    sites (base) with that site's sigma."""
    out = []
    for h in sorted({r["host"] for r in rows}):
        rs = [r for r in rows if r["host"] == h]
        dft = min(rs, key=lambda r: r["dft_de"])
        mod = min(rs, key=lambda r: r["base"])
        out.append({"host": h, "dft_de": dft["dft_de"], "base": mod["base"], "sigma": mod["sigma"]})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "models", nargs="+", help="NAME=CHECKPOINT (posteriors never trained on the held-out hosts)"
    )
    ap.add_argument("--labels", default="dft/labels.db")
    ap.add_argument("--settings-hash", default="8105ed16eae5")
    ap.add_argument("--hosts-file", default="benchmarks/heldout_hosts.txt")
    ap.add_argument("--samples", type=int, default=20, help="posterior samples per ΔE_H (default 20)")
    ap.add_argument("--out", default="benchmarks/results/sigma_calibration.json")
    args = ap.parse_args()
    from screening.bench_model import parse_named_models

    specs = parse_named_models(args.models)

    import torch

    from potentials.bayes import load_posterior
    from potentials.calibration import error_sigma_spearman
    from potentials.checkpoint import dft_hosts, load
    from screening.bench_model import dft_triples, left_out_note, left_out_records, triple_de
    from screening.cmd_anchor import fit_sigma_factor

    warnings.filterwarnings("ignore", category=UserWarning)
    torch.set_num_threads(1)
    split = read_split(args.hosts_file)
    role = {h: k for k, hosts in split.items() for h in hosts}
    for name, path in specs:
        seen = set(role) & dft_hosts(load(path))
        if seen:
            raise SystemExit(f"{name} trained on {', '.join(sorted(seen))} of {args.hosts_file}")
    left_out: list = []
    triples = [
        t
        for t in dft_triples(args.labels, settings_hash=args.settings_hash, left_out=left_out)
        if t["geometry"] == "validate" and t["host"] in role
    ]
    left_out = [t for t in left_out if t["host"] in role]
    t0 = time.perf_counter()
    out: dict = {
        "labels": args.labels,
        "settings_hash": args.settings_hash,
        "models": dict(specs),
        "results": {},
    }
    if left_out:
        print(left_out_note(left_out) + "\n")
    print(
        "| model | calibration (hosts / triples) | factor | LOHO 1σ / 2σ on calibration | test triples | "
        "mean σ | 1σ / 2σ, own σ | 1σ / 2σ, fitted | test hosts: 1σ / 2σ, own σ | 1σ / 2σ, fitted |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, path in specs:
        post = load_posterior(path)
        rows = []
        for t in triples:
            de, sig = triple_de(post, t["atoms"], args.samples)
            rows.append({"name": t["name"], "host": t["host"], "role": role[t["host"]], "dft_de": t["dft_de"],
                         "base": de, "sigma": sig})  # fmt: skip
        cal = [r for r in rows if r["role"] == "calibration"]
        test = [r for r in rows if r["role"] == "test"]
        fit = fit_sigma_factor(cal)
        f = fit["factor"]
        z = np.array([(r["base"] - r["dft_de"]) / r["sigma"] for r in test])
        hosts = per_host(test)
        zh = np.array([(h["base"] - h["dft_de"]) / h["sigma"] for h in hosts])
        res = {
            "calibration_hosts": sorted({r["host"] for r in cal}),
            "n_calibration_triples": len(cal),
            "factor": f,
            "calibration_loho_coverage": fit["loho_coverage"],
            "n_test_triples": len(test),
            "n_test_hosts": len(hosts),
            "test_mean_sigma": float(np.mean([r["sigma"] for r in test])),
            "test_coverage_own": coverage(z),
            "test_coverage_fitted": coverage(z / f),
            "test_host_coverage_own": coverage(zh),
            "test_host_coverage_fitted": coverage(zh / f),
            "test_factor": float(np.sqrt(np.mean(z**2))),
            "test_scores_own": calibration_scores(test),
            "test_scores_fitted": calibration_scores(test, f),
            "test_error_sigma_spearman": error_sigma_spearman(
                [r["dft_de"] for r in test], [r["base"] for r in test], [r["sigma"] for r in test]
            ),
            "rows": rows,
            "hosts": hosts,
        }
        out["results"][name] = res
        c = res
        print(
            f"| {name} | {len(c['calibration_hosts'])} / {len(cal)} | {f:.2f} | "
            f"{c['calibration_loho_coverage'][0]:.2f} / {c['calibration_loho_coverage'][1]:.2f} | {len(test)} | "
            f"{c['test_mean_sigma']:.3f} | {c['test_coverage_own'][0]:.2f} / {c['test_coverage_own'][1]:.2f} | "
            f"{c['test_coverage_fitted'][0]:.2f} / {c['test_coverage_fitted'][1]:.2f} | "
            f"{c['test_host_coverage_own'][0]:.2f} / {c['test_host_coverage_own'][1]:.2f} | "
            f"{c['test_host_coverage_fitted'][0]:.2f} / {c['test_host_coverage_fitted'][1]:.2f} |"
        )
    print(
        "\n| model | test NLL, own σ | fitted | miscalibration area, own σ | fitted | Spearman |error| vs σ | "
        "apply the factor? |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, c in out["results"].items():
        own, fitted = c["test_scores_own"], c["test_scores_fitted"]
        c["apply_factor"] = factor_verdict(own, fitted)
        print(
            f"| {name} | {own['nll']:.3f} | {fitted['nll']:.3f} | {own['miscalibration_area']:.3f} | "
            f"{fitted['miscalibration_area']:.3f} | {c['test_error_sigma_spearman']:+.2f} | "
            f"{'yes' if c['apply_factor'] else 'no'} |"
        )
    print(
        "\n| model (all held-out triples) | triples / hosts | 1σ / 2σ, own σ | RMS z | per-host NLL | against the first |"
    )
    print("|---|---|---|---|---|---|")
    first = None
    for name, c in out["results"].items():
        rows = c["rows"]
        z = np.array([(r["base"] - r["dft_de"]) / r["sigma"] for r in rows])
        nll = host_nll(rows)
        c["all_coverage_own"] = coverage(z)
        c["all_rms_z"] = float(np.sqrt(np.mean(z**2)))
        c["all_host_nll"] = float(np.mean(list(nll.values())))
        vs = ""
        if first is None:
            first = nll
        else:
            c["paired_host_nll"] = pr = paired_nll(first, nll)
            vs = f"{pr['diff']:+.3f} (90 % {pr['lo']:+.3f} to {pr['hi']:+.3f}, lower in {pr['p_lower']:.0%})"
        print(
            f"| {name} | {len(rows)} / {len(nll)} | {c['all_coverage_own'][0]:.2f} / {c['all_coverage_own'][1]:.2f} "
            f"| {c['all_rms_z']:.2f} | {c['all_host_nll']:.3f} | {vs} |"
        )
    out["left_out"] = left_out_records(left_out)
    out["wall_s"] = time.perf_counter() - t0
    json.dump(out, open(args.out, "w"), indent=1)
    print(f"\n{time.perf_counter() - t0:.0f} s -> {args.out}")


if __name__ == "__main__":
    main()
