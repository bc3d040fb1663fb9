"""``screen bench uq``: Bayesian methods on acac — accuracy, calibration, recalibration, OOD detection.

Trains every method on train_300K (a seeded 10 % validation split for early stopping and
recalibration), tests on test_MD_300K (in distribution) and test_MD_600K (out of distribution), and
writes benchmarks/results/uq.json, a BENCHMARKS.md section and PNG figures under benchmarks/figures/.
Also compares the same ensemble trained with NLL_JEF and with the conventional NLL (energy NLL + force
MSE). Trained posteriors are kept under --work (resumable; the folder name hashes the settings).
"""

from __future__ import annotations

import argparse

METHODS = ("point", "ensemble", "swag", "ivon", "laplace")
DEFAULT_DATA = "../shared/data/botnet/acac"  # relative to the repository root
TARGETS = {"miscal_area_max": 0.05, "coverage_95": (0.92, 0.98), "auroc_min": 0.85}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--methods",
        default="ensemble,swag,ivon,laplace",
        help=f"comma-separated subset of {','.join(METHODS)} (default ensemble,swag,ivon,laplace)",
    )
    parser.add_argument(
        "--preset",
        default="cpu",
        choices=("paper", "cpu", "tiny"),
        help="Bayesian and training preset (default cpu: tiny model, 40 epochs, scaled-down methods)",
    )
    parser.add_argument(
        "--model",
        choices=("tiny", "small", "large"),
        help="model preset (default: tiny for cpu/tiny, small for paper)",
    )
    parser.add_argument(
        "--dtype",
        default="float64",
        choices=("float64", "float32"),
        help="model dtype (default float64: the float32 force-covariance Cholesky can fail)",
    )
    parser.add_argument("--data", default=DEFAULT_DATA, help="folder with the acac extxyz files")
    parser.add_argument(
        "--n-train", type=int, default=0, help="training structures used (0 = all of train_300K)"
    )
    parser.add_argument("--n-test", type=int, default=0, help="structures of each test set (0 = all)")
    parser.add_argument("--epochs", type=int, help="training epochs (default: the preset's)")
    parser.add_argument("--members", type=int, help="ensemble members (default: the preset's)")
    parser.add_argument(
        "--max-minutes",
        type=float,
        default=0.0,
        help="total training budget in minutes, shared evenly by the training runs (0 = none)",
    )
    parser.add_argument(
        "--no-loss-comparison",
        action="store_true",
        help="skip the NLL_JEF vs conventional-NLL ensemble comparison",
    )
    parser.add_argument("--work", default="runs/bench_uq", help="folder for trained posteriors (resumable)")
    parser.add_argument("--figures", default="benchmarks/figures", help="folder for the PNG figures")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")


# ---- evaluation ------------------------------------------------------------------------------------
def _sigma(var):
    import numpy as np

    return np.sqrt(np.maximum(var, 1e-30))


def _evaluate(posterior, valid, test_in, test_out) -> dict:
    """Predictions on the three sets, recalibrations fitted on validation, every metric."""
    import numpy as np

    from potentials import calibration as C
    from potentials.bayes.fit import predict_dataset

    preds = {
        name: predict_dataset(posterior, graphs=g)
        for name, g in (("valid", valid), ("in", test_in), ("out", test_out))
    }
    v, t = preds["valid"], preds["in"]
    recals = {
        kind: {
            q: C.fit_recalibration(v[f"{q}_label"], v[q], _sigma(v[f"{q}_var"]), kind)
            for q in ("energy", "forces")
        }
        for kind in ("scale", "isotonic")
    }
    metrics = {}
    for q in ("energy", "forces"):
        y, mu, s = t[f"{q}_label"], t[q], _sigma(t[f"{q}_var"])
        metrics[q] = {
            "raw": C.metrics(y, mu, s),
            **{kind: C.metrics(y, mu, s, recals[kind][q]) for kind in recals},
        }
        metrics[q]["scale_factor"] = recals["scale"][q].scale
    ood = {}
    for kind in ("forces", "energy"):
        for epi in (True, False):
            scores = [_scores(preds[name], kind, epi) for name in ("in", "out")]
            ood[f"{kind}_{'epistemic' if epi else 'total'}"] = {
                **C.ood_auc(*scores),
                "in_median": float(np.median(scores[0])),
                "out_median": float(np.median(scores[1])),
            }
    n_pred = len(test_in) + len(test_out)
    return {
        "metrics": metrics,
        "ood": ood,
        "recal": recals,
        "preds": preds,
        "predict_ms_per_structure": 1e3 * (preds["in"]["seconds"] + preds["out"]["seconds"]) / n_pred,
    }


def _scores(p: dict, kind: str, epistemic: bool):
    import numpy as np

    n = p["num_atoms"]
    if kind == "energy":
        var = p["energy_var_epi"] if epistemic else p["energy_var"]
        return np.sqrt(np.maximum(var, 0.0)) / n
    var = p["forces_var_epi"] if epistemic else p["forces_var"]
    per_atom = np.sqrt(np.maximum(var.reshape(-1, 3).mean(-1), 0.0))
    return np.bincount(p["batch"], weights=per_atom, minlength=n.size) / n


# ---- figures ---------------------------------------------------------------------------------------
def _figures(results: dict, folder) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from potentials import calibration as C

    folder.mkdir(parents=True, exist_ok=True)
    names = list(results)
    paths = []
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
    for ax, q in zip(axes, ("energy", "forces")):
        ax.plot([0, 1], [0, 1], color="0.6", lw=1)
        for i, name in enumerate(names):
            t, rec = results[name]["preds"]["in"], results[name]["recal"]["scale"][q]
            y, mu, s = t[f"{q}_label"], t[q], _sigma(t[f"{q}_var"])
            lv, obs = C.coverage_curve(y, mu, s)
            ax.plot(lv, obs, ls="--", color=f"C{i}", lw=1)
            lv, obs = C.recalibrated_coverage_curve(y, mu, s, rec)
            ax.plot(lv, obs, color=f"C{i}", lw=1.5, label=name)
        ax.set(
            xlabel="expected coverage", ylabel="observed coverage", title=f"{q} (dashed: raw, solid: scaled)"
        )
        ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(_save(fig, folder / "uq_reliability.png"))

    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.2), squeeze=False)
    rng = np.random.default_rng(0)
    for ax, name in zip(axes[0], names):
        t, scale = results[name]["preds"]["in"], results[name]["recal"]["scale"]["forces"].scale
        err, s = np.abs(t["forces"] - t["forces_label"]).ravel(), scale * _sigma(t["forces_var"]).ravel()
        pick = rng.choice(err.size, min(3000, err.size), replace=False)
        ax.scatter(s[pick], err[pick], s=2, alpha=0.3)
        order = np.argsort(s)
        bins = np.array_split(order, 15)
        ax.plot(
            [np.sqrt(np.mean(s[b] ** 2)) for b in bins],
            [np.sqrt(np.mean(err[b] ** 2)) for b in bins],
            "o-",
            color="C3",
            ms=3,
            label="binned RMSE",
        )
        lo, hi = max(s.min(), 1e-4), s.max()
        ax.plot([lo, hi], [lo, hi], color="0.5", lw=1)
        ax.set(xscale="log", yscale="log", xlabel="σ_F (eV/Å, scaled)", ylabel="|F error| (eV/Å)", title=name)
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(_save(fig, folder / "uq_error_vs_sigma.png"))

    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.0), squeeze=False)
    for ax, name in zip(axes[0], names):
        s_in, s_out = (_scores(results[name]["preds"][k], "forces", True) for k in ("in", "out"))
        bins = np.histogram_bin_edges(np.concatenate([s_in, s_out]), 40)
        ax.hist(s_in, bins, alpha=0.6, label="300 K (in)")
        ax.hist(s_out, bins, alpha=0.6, label="600 K (OOD)")
        auroc = results[name]["ood"]["forces_epistemic"]["auroc"]
        ax.set(
            xlabel="mean epistemic σ_F per atom (eV/Å)",
            ylabel="structures",
            title=f"{name}: AUROC {auroc:.2f}",
        )
        ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(_save(fig, folder / "uq_ood_hist.png"))
    return paths


def _save(fig, path) -> str:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


# ---- tables ----------------------------------------------------------------------------------------
def _row(name: str, r: dict) -> str:
    e, f = r["metrics"]["energy"], r["metrics"]["forces"]
    return (
        f"| {name} | {1e3 * e['raw']['mae']:.1f} | {1e3 * f['raw']['mae']:.1f} | {e['scale']['nll']:.2f} | "
        f"{f['scale']['nll']:.3f} | {f['raw']['spearman']:.2f} | {f['raw']['miscal_area']:.3f} → "
        f"{f['scale']['miscal_area']:.3f} / {f['isotonic']['miscal_area']:.3f} | {e['raw']['miscal_area']:.3f} → "
        f"{e['scale']['miscal_area']:.3f} | {f['scale']['ence']:.2f} | {f['scale']['coverage_95']:.3f} | "
        f"{r['ood']['forces_epistemic']['auroc']:.3f} | {r['train_seconds']:.0f} | "
        f"{r['predict_ms_per_structure']:.1f} |"
    )


def _table(results: dict, loss_cmp: dict | None, settings: dict, checks: dict) -> str:
    head = (
        "| method | E MAE (meV) | F MAE (meV/Å) | E NLL | F NLL | F Spearman | F miscal. area raw → scale / iso "
        "| E miscal. area raw → scale | F ENCE | F 95 % cov. | OOD AUROC | train (s) | predict (ms/struct) |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [
        f"Settings: preset `{settings['preset']}`, model `{settings['model']}` ({settings['dtype']}), {settings['n_train']} training / "
        f"{settings['n_valid']} validation structures of train_300K, {settings['epochs']} epochs, "
        f"test {settings['n_in']} (300 K) + {settings['n_out']} (600 K OOD) structures, {settings['threads']} CPU "
        "thread(s). Energies per structure (total), forces per component; NLL in nats after variance scaling "
        "fitted on validation; ENCE and 95 % coverage after scaling; OOD score = mean epistemic force σ per atom.",
        "",
        head,
        *[_row(n, r) for n, r in results.items()],
        "",
    ]
    if loss_cmp:
        lines += [
            "Loss comparison (same ensemble, same seeds):",
            "",
            "| training loss | F MAE (meV/Å) | F NLL raw | F NLL scaled | E MAE (meV) |",
            "|---|---|---|---|---|",
        ]
        for name, r in loss_cmp.items():
            lines.append(
                f"| {name} | {1e3 * r['forces_mae']:.1f} | {r['forces_nll_raw']:.3f} | "
                f"{r['forces_nll_scaled']:.3f} | {1e3 * r['energy_mae']:.1f} |"
            )
        lines.append("")
    lines.append(
        "Targets: "
        + "; ".join(f"{k}: {'met' if v['met'] else 'NOT met'} ({v['value']})" for k, v in checks.items())
    )
    lines.append("")
    lines.append("Figures: " + ", ".join(f"`{p}`" for p in settings.get("figures", [])) + ".")
    return "\n".join(lines)


def _checks(results: dict, loss_cmp: dict | None) -> dict:
    """Evaluate the issue's targets on the best method (lowest force NLL after scaling, a proper score)."""
    best = min(results, key=lambda n: results[n]["metrics"]["forces"]["scale"]["nll"])
    f = results[best]["metrics"]["forces"]["scale"]
    lo, hi = TARGETS["coverage_95"]
    bayes = [n for n in results if n != "point"] or list(results)  # a point model has no epistemic part
    best_auroc = max(bayes, key=lambda n: results[n]["ood"]["forces_epistemic"]["auroc"])
    auroc = results[best_auroc]["ood"]["forces_epistemic"]["auroc"]
    out = {
        "force miscalibration area <= 0.05 (best method)": {
            "met": f["miscal_area"] <= TARGETS["miscal_area_max"],
            "value": f"{best}: {f['miscal_area']:.3f}",
        },
        "95 % coverage in 0.92-0.98 (best method)": {
            "met": lo <= f["coverage_95"] <= hi,
            "value": f"{best}: {f['coverage_95']:.3f}",
        },
        "OOD AUROC >= 0.85": {"met": auroc >= TARGETS["auroc_min"], "value": f"{best_auroc}: {auroc:.3f}"},
    }
    if loss_cmp and len(loss_cmp) == 2:
        jef, nll = loss_cmp["NLL_JEF"]["forces_mae"], loss_cmp["conventional NLL"]["forces_mae"]
        out["NLL_JEF force MAE <= conventional NLL"] = {
            "met": jef <= nll,
            "value": f"{1e3 * jef:.1f} vs {1e3 * nll:.1f} meV/Å",
        }
    return out


def _loss_summary(r: dict) -> dict:
    f, e = r["metrics"]["forces"], r["metrics"]["energy"]
    return {
        "forces_mae": f["raw"]["mae"],
        "forces_nll_raw": f["raw"]["nll"],
        "forces_nll_scaled": f["scale"]["nll"],
        "energy_mae": e["raw"]["mae"],
        "forces_miscal_scaled": f["scale"]["miscal_area"],
    }


def _public(r: dict) -> dict:
    """The JSON part of one method's result (no arrays)."""
    return {
        "metrics": r["metrics"],
        "ood": r["ood"],
        "train_seconds": r["train_seconds"],
        "predict_ms_per_structure": r["predict_ms_per_structure"],
        "posterior": r["posterior"],
        "recalibration": {k: {q: v.to_dict() for q, v in d.items()} for k, d in r["recal"].items()},
    }


# ---- the benchmark ---------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> int:
    import hashlib
    import json
    import sys
    import time
    from dataclasses import replace
    from pathlib import Path

    import numpy as np
    import torch

    from potentials.bayes import load_posterior
    from potentials.bayes.base import RecalibrationPair
    from potentials.bayes.fit import fit_posterior, method_config, train_config_for
    from potentials.data import atoms_to_graph, read_dataset, read_e0s
    from potentials.model import preset
    from structures.common import InputError, atomic_write_text, write_bench_result

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise InputError(f"unknown method(s) {', '.join(bad) or '(none)'}; choose from {', '.join(METHODS)}")
    for name in ("n_train", "n_test"):
        if getattr(args, name) < 0:
            raise InputError(f"--{name.replace('_', '-')} {getattr(args, name)} must be >= 0")
    if args.epochs is not None and args.epochs < 2:
        raise InputError(f"--epochs {args.epochs} must be >= 2")
    data = Path(args.data)
    files = {k: data / f"{k}.xyz" for k in ("train_300K", "test_MD_300K", "test_MD_600K", "isolated_atoms")}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise InputError(f"acac file(s) not found: {', '.join(missing)}; pass --data FOLDER")
    torch.set_num_threads(max(1, args.threads))

    rng = np.random.default_rng(args.seed)
    pool = read_dataset(files["train_300K"])
    perm = rng.permutation(len(pool))
    n_valid = max(1, int(round(0.1 * len(pool))))
    valid = [pool[i] for i in perm[:n_valid]]
    train = [pool[i] for i in perm[n_valid:]]
    if args.n_train:
        train = train[: args.n_train]
    e0s = read_e0s(files["isolated_atoms"])
    tests = {}
    for key, name in (("in", "test_MD_300K"), ("out", "test_MD_600K")):
        frames = read_dataset(files[name])
        if args.n_test:
            frames = [
                frames[i] for i in np.sort(rng.choice(len(frames), min(args.n_test, len(frames)), False))
            ]
        tests[key] = frames

    model_name = args.model or ("small" if args.preset == "paper" else "tiny")
    model_config = preset(model_name, dtype=args.dtype)
    train_config = train_config_for(args.preset, seed=args.seed)
    if args.epochs:
        train_config = replace(
            train_config,
            epochs=args.epochs,
            loss=replace(
                train_config.loss,
                mse_warmup_epochs=min(train_config.loss.mse_warmup_epochs, args.epochs // 4),
            ),
        )
    overrides = {"ensemble": {"members": args.members} if args.members else {}}
    configs = {m: method_config(m, args.preset, **overrides.get(m, {})) for m in methods}
    runs_per = {
        "point": 1,
        "swag": 2,
        "ivon": 1,
        "laplace": 1,
        "ensemble": configs.get("ensemble").members if "ensemble" in configs else 0,
    }
    n_runs = sum(runs_per[m] for m in methods)
    if not args.no_loss_comparison:
        n_runs += (
            configs["ensemble"].members
            if "ensemble" in configs
            else method_config("ensemble", args.preset, **overrides["ensemble"]).members
        ) * (1 if "ensemble" in methods else 2)
    if args.max_minutes > 0:
        train_config = replace(train_config, max_minutes=args.max_minutes / max(n_runs, 1))

    settings = {
        "preset": args.preset,
        "model": model_name,
        "dtype": args.dtype,
        "n_train": len(train),
        "n_valid": len(valid),
        "epochs": train_config.epochs,
        "n_in": len(tests["in"]),
        "n_out": len(tests["out"]),
        "threads": torch.get_num_threads(),
        "seed": args.seed,
        "max_minutes": args.max_minutes,
        "train_config": train_config.to_dict(),
        "methods": {m: (c.to_dict() if c else None) for m, c in configs.items()},
    }
    common = {k: v for k, v in settings.items() if k not in ("threads", "methods", "n_in", "n_out")}

    def _key(obj) -> str:
        return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:10]

    work = Path(args.work) / _key(common)
    print(f"bench uq: work folder {work}", file=sys.stderr)

    def graphs(frames, post):
        return [atoms_to_graph(a, post.elements, post.cutoff) for a in frames]

    def fitted(method: str, folder: str, config):
        """Fit (or reload) a raw posterior and its training time (one folder per method settings)."""
        out = work / f"{folder}_{_key(config.to_dict() if config else None)}"
        done = out / "fit.json"
        if done.exists() and (out / "posterior.pt").exists():
            post = load_posterior(out / "posterior.pt")
            seconds = json.loads(done.read_text())["seconds"]
        else:
            t0 = time.perf_counter()
            post, _ = fit_posterior(
                method,
                train,
                valid,
                model_config,
                args.preset,
                out,
                train_config=train_config,
                config=config,
                e0s=e0s,
                recalibration="none",
                seed=args.seed,
            )
            seconds = time.perf_counter() - t0
            atomic_write_text(done, json.dumps({"seconds": seconds}) + "\n")
        post.recal = RecalibrationPair()
        return post, seconds, out / "posterior.pt"

    results: dict[str, dict] = {}
    cache: dict[str, tuple] = {}
    for method in methods:
        print(f"bench uq: {method}", file=sys.stderr)
        post, seconds, path = fitted(method, method, configs[method])
        cache[method] = (post, seconds, path)
        r = _evaluate(post, graphs(valid, post), graphs(tests["in"], post), graphs(tests["out"], post))
        r["train_seconds"], r["posterior"] = seconds, str(path)
        results[method] = r
        post.recal = RecalibrationPair(r["recal"]["scale"]["energy"], r["recal"]["scale"]["forces"])
        post.save(path)  # the kept posterior carries its variance scaling

    loss_cmp = None
    if not args.no_loss_comparison:
        ens_cfg = configs.get("ensemble") or method_config("ensemble", args.preset, **overrides["ensemble"])
        loss_cmp = {}
        for label, loss in (("NLL_JEF", "nll_jef"), ("conventional NLL", "nll_e")):
            if loss == "nll_jef" and "ensemble" in results:
                loss_cmp[label] = _loss_summary(results["ensemble"])
                continue
            print(f"bench uq: ensemble trained with {loss}", file=sys.stderr)
            post, _, _ = fitted("ensemble", f"ensemble_{loss}", replace(ens_cfg, loss=loss))
            r = _evaluate(post, graphs(valid, post), graphs(tests["in"], post), graphs(tests["out"], post))
            loss_cmp[label] = _loss_summary(r)

    figures = _figures(results, Path(args.figures))
    settings["figures"] = figures
    checks = _checks(results, loss_cmp)
    table = _table(results, loss_cmp, settings, checks)
    payload = {
        "settings": settings,
        "methods": {m: _public(r) for m, r in results.items()},
        "loss_comparison": loss_cmp,
        "targets": checks,
        "figures": figures,
    }
    command = "screen bench uq " + " ".join(sys.argv[3:]) if len(sys.argv) > 3 else "screen bench uq"
    out = write_bench_result("uq", payload, command.strip(), table)
    print(table)
    print(f"\nwritten: {out}", file=sys.stderr)
    return 0
