"""``screen bench model``: the model card of a posterior checkpoint, measured.

Held-out energy/force errors and calibration against the model's own reference (the labels it was trained
on, e.g. SevenNet-0), and ΔE_H = E(host+H) − E(host) − ½E(H2) against plane-wave DFT (GPAW) at the DFT
geometries of the label store, side by side with SevenNet-0 at the same geometries. Writes the card
(Markdown + figures), benchmarks/results/model.json and a BENCHMARKS.md section.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from typing import Any

DEFAULT_MODEL = "potentials/models/default.pt"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"posterior checkpoint (default {DEFAULT_MODEL})"
    )
    parser.add_argument(
        "--valid",
        default=None,
        help="held-out labelled structures (extxyz / ASE db); without it, the held-out errors of --reuse-valid "
        "are reused when they were measured on the same network (an anchored copy changes ΔGH* only)",
    )
    parser.add_argument(
        "--reuse-valid",
        default="benchmarks/results/model.json",
        help="earlier `bench model` result whose held-out errors are reused without --valid "
        "(default benchmarks/results/model.json)",
    )
    parser.add_argument("--train", help="training set, for the data summary and element coverage")
    parser.add_argument("--dft-db", default="dft/labels.db", help="GPAW label store for the ΔE_H check")
    parser.add_argument("--card", default="potentials/models/MODEL_CARD.md", help="model card to write")
    parser.add_argument("--samples", type=int, default=20, help="posterior samples K")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--no-sevenn", action="store_true", help="skip the SevenNet-0 column")
    parser.add_argument("--note", default="", help="free text for the card (how the model was built)")
    parser.add_argument(
        "--heldout",
        default="benchmarks/results/heldout.json",
        help="`screen bench heldout` result of this model: its ΔGH* table goes into the card",
    )


def heldout_section(path: str, full_hash: str, dft_trained: bool = False) -> str:
    """The card's held-out ΔGH* paragraph from a ``screen bench heldout`` JSON, when it is this model's.

    ``dft_trained``: the model was fine-tuned on DFT labels, so a ΔGH* comparison with its pre-training
    reference measures how far the fine-tuning moved it from that teacher, not its accuracy; without a result
    of its own the card says so instead of asking for one.
    """
    import json
    from pathlib import Path

    hp = Path(path)
    teacher = (
        "This model is fine-tuned on DFT labels: ΔGH* against its pre-training reference would say how far "
        "the fine-tuning moved it from that teacher, not how right it is; its held-out accuracy is the DFT "
        "section below"
    )
    if not hp.exists():
        return (
            f"{teacher}.\n" if dft_trained else "Not measured for this model (run `screen bench heldout`).\n"
        )
    ho = json.loads(hp.read_text())
    if not str(ho.get("model_hash", "")).lstrip("m") or not full_hash.startswith(
        str(ho["model_hash"]).lstrip("m")
    ):
        if dft_trained:
            return f"{teacher} (`{hp}` is for another model, {ho.get('model_hash')}).\n"
        return f"`{hp}` is for another model ({ho.get('model_hash')}); rerun `screen bench heldout`.\n"
    return (
        f"{ho['n_hosts']} hosts in no training file, reference `{ho['reference']}` relaxed from the "
        f"model geometries: ΔGH* MAE {ho['dg_mae_eV']:.3f} eV, RMSE {ho['dg_rmse_eV']:.3f} eV, "
        f"errors inside 2σ {ho['coverage_2sigma']:.2f}, same best site {ho['same_best_site']:.2f} "
        f"(`{ho.get('command', 'screen bench heldout')}`; table in BENCHMARKS.md, section heldout).\n"
    )


def heldout_host_text(rows: list[dict]) -> str:
    """One sentence on the held-out rows' per-host figures (``screen validate`` geometries only, the
    screen's own): ΔGH* per host as the lowest labelled site (DFT's and the model's over the same sites,
    :func:`screening.bench_anchor.host_level`) and, of the structures DFT puts inside the HER window, how
    many the model's ΔGH* 2σ interval keeps on the list (issue 10's ≥ 80 % target); "" without such rows."""
    from .bench_anchor import _stats, host_level

    val = [
        {**r, "model": r["model_de"], "model_sigma": r["model_sigma"]}
        for r in rows
        if r.get("geometry") == "validate" and r.get("host")
    ]
    if not val:
        return ""
    summ, _ = host_level(val, ["model", "sevenn_de"])
    st = _stats(val, "model")
    m = summ["model"]
    lo, hi = m["mae_ci"]
    out = (
        f"Per host (model-relaxed geometries, lowest labelled site): MAE {m['mae']:.3f} eV over {m['n']} hosts "
        f"(90 % interval {lo:.2f}–{hi:.2f})"
        + (f", SevenNet-0 {summ['sevenn_de']['mae']:.3f}" if "sevenn_de" in summ else "")
        + f"; of the {st['dft_active']} structure(s) DFT puts within 0.2 eV of thermoneutral, the 2σ list keeps "
        f"{st['recovered']} ({st['list_fraction']:.0%} of all on the list). "
    )
    return out


def _predict(post, atoms_list, batch_size: int, n_samples: int):
    import numpy as np

    from potentials.data import collate

    e_true, e_pred, e_sig, nat, f_true, f_pred, f_sig = [], [], [], [], [], [], []
    for i in range(0, len(atoms_list), batch_size):
        chunk = atoms_list[i : i + batch_size]
        batch = collate(chunk, post.elements, post.cutoff, dtype=post.dtype)
        pred = post.predict(batch, n_samples=n_samples, forces=True)
        e_true.append(batch["energy"].double().numpy())
        e_pred.append(pred.energy.double().numpy())
        e_sig.append(pred.energy_var.double().sqrt().numpy())
        nat.append(batch["num_atoms"].numpy())
        f_true.append(batch["forces"].double().numpy().ravel())
        f_pred.append(pred.forces.double().numpy().ravel())
        f_sig.append(pred.forces_var.double().sqrt().numpy().ravel())
    cat = np.concatenate
    return cat(e_true), cat(e_pred), cat(e_sig), cat(nat), cat(f_true), cat(f_pred), cat(f_sig)


def triple_de_parts(post, atoms3, n_samples: int) -> tuple[float, float, float]:
    """(ΔE_H eV, epistemic σ eV, aleatoric σ eV) of a posterior on ``atoms3`` = (host, host+H, H2), the bare
    network's (no anchoring): the epistemic part from the posterior draws of the difference (correlations
    kept, scaled by the recalibration's energy factor as in screening.dgh), the aleatoric one from the three
    predicted variances; both times the posterior's ΔGH* σ factor, as the screen reports them."""
    import numpy as np

    from potentials.data import collate

    from .dgh import dg_sigma_scale, energy_sigma_scale

    batch = collate(list(atoms3), post.elements, post.cutoff, dtype=post.dtype, with_labels=False)
    pred = post.predict(batch, n_samples=n_samples, forces=False)
    s = pred.energy_samples.double().numpy()
    de_k = s[:, 1] - s[:, 0] - 0.5 * s[:, 2]
    va = pred.energy_var_aleatoric.double().numpy()
    e = pred.energy.double().numpy()
    scale = dg_sigma_scale(post)
    ep = scale * energy_sigma_scale(post) * float(np.sqrt(de_k.var()))
    al = scale * float(np.sqrt(va[0] + va[1] + 0.25 * va[2]))
    return float(e[1] - e[0] - 0.5 * e[2]), ep, al


def triple_de(post, atoms3, n_samples: int, anchored: bool = True) -> tuple[float, float]:
    """ΔE_H = E(host+H) - E(host) - E(H2)/2 (eV) of a posterior on ``atoms3`` = (host, host+H, H2) and its
    σ (eV): epistemic and aleatoric parts of :func:`triple_de_parts` in quadrature, as the screen reports
    it; with ``anchored`` the posterior's DFT anchoring (offset, σ in quadrature, see
    :func:`screening.dgh.dg_anchor`; a site-class anchoring takes the H* state's class) too, as the screen
    applies it; without, the bare network's."""
    import numpy as np

    from structures import keys as K

    from .anchoring import site_class
    from .dgh import dg_anchor

    de, ep, al = triple_de_parts(post, atoms3, n_samples)
    offset, sigma_add = (
        dg_anchor(post, atoms3[0].info.get(K.HOST), [site_class(atoms3[1])]) if anchored else (0.0, 0.0)
    )
    offset, sigma_add = (
        float(np.ravel(offset)[0]),
        float(np.ravel(sigma_add)[0]),
    )  # a site-class anchoring: (1,)
    return de + offset, float(np.sqrt(ep**2 + al**2 + sigma_add**2))


def sevenn_calculator():
    """SevenNet-0 on the CPU, or None when the ``reference`` extra (sevenn) is not installed."""
    try:
        from sevenn.calculator import SevenNetCalculator
    except ImportError:
        return None
    return SevenNetCalculator("7net-0", device="cpu")


def calc_triple_de(calc, atoms3) -> float:
    """ΔE_H (eV) of an ASE calculator (e.g. SevenNet-0) on (host, host+H, H2) single points."""
    es = []
    for a in atoms3:
        a = a.copy()
        a.calc = calc
        es.append(a.get_potential_energy())
    return es[1] - es[0] - 0.5 * es[2]


# A single point whose force on the adsorbed H exceeds this (eV/Å) is far from any minimum: its ΔE_H is no
# truth for ΔGH*. Of the plane-wave labels, the H forces are 0.3-1.6 eV/Å except Co2@5Nb+H@top_M1 (12.6
# eV/Å: the model relaxed H to 1.16 Å from Co and 1.12 Å from C, a state the screen flagged h_migrated).
MAX_H_FORCE = 5.0

# A single point (host or host+H) with a DFT force on *any* atom above this (eV/Å) is a model geometry
# failure too, whatever the force on H. Set in session 22, when Rh2@2Nd+H@top_M2 landed at 19.1 eV/Å on one
# Rh (v0.5.1 had stretched the pair by 0.46 Å; DFT ΔE_H +4.8 eV); the next largest of the 140 labels was
# 9.5 eV/Å (Au2@2Nd+H@top_X4), so any threshold between 10 and 19 eV/Å leaves out the same labels.
MAX_STATE_FORCE = 15.0


def largest_force(forces, numbers=None) -> float:
    """Largest force norm (eV/Å) in ``forces`` (N, 3), on the H atoms only when ``numbers`` (N,) is given;
    nan without forces (or without H, or when the lengths disagree)."""
    import numpy as np

    if forces is None or len(forces) == 0:
        return float("nan")
    f = np.asarray(forces, dtype=float)
    if numbers is not None:
        h = np.asarray(numbers) == 1
        if len(h) != len(f) or not h.any():
            return float("nan")
        f = f[h]
    return float(np.linalg.norm(f, axis=1).max())


def h_force(row) -> float:
    """Largest DFT force (eV/Å) on an H atom of a label row; nan without forces or H."""
    return largest_force(row.get("forces"), row.numbers)


def max_force(row) -> float:
    """Largest DFT force (eV/Å) on any atom of a label row; nan without forces. At a model-relaxed geometry
    it says how far that geometry is from a DFT minimum."""
    return largest_force(row.get("forces"))


def is_geometry_failure(
    fmax: float, h_force: float, max_h_force: float | None = None, max_state_force: float | None = None
) -> bool:
    """True when the largest DFT force on any atom ``fmax`` exceeds ``max_state_force`` (None:
    ``MAX_STATE_FORCE``) or the one on H ``h_force`` exceeds ``max_h_force`` (None: ``MAX_H_FORCE``), eV/Å:
    the model's geometry is far from any DFT minimum. nan counts as no failure (no forces stored)."""
    h_cap = MAX_H_FORCE if max_h_force is None else max_h_force
    state_cap = MAX_STATE_FORCE if max_state_force is None else max_state_force
    return bool(h_force > h_cap or fmax > state_cap)


def parse_named_models(specs: Sequence[str]) -> list[tuple[str, str]]:
    """[(NAME, CHECKPOINT)] from the NAME=CHECKPOINT arguments of the DFT benchmark scripts; SystemExit
    naming a malformed one."""
    out = []
    for s in specs:
        name, sep, path = s.partition("=")
        if not sep or not name or not path:
            raise SystemExit(
                f"bad model '{s}'; allowed: NAME=CHECKPOINT, e.g. v0.5.1=potentials/models/default.pt"
            )
        out.append((name, path))
    return out


def left_out_records(left_out: Sequence[dict]) -> list[dict]:
    """The JSON-able part of the triples ``dft_triples`` left out: name, host, DFT ΔE_H and the forces."""
    return [
        {k: t[k] for k in ("name", "host", "dft_de", "h_force", "host_fmax", "state_fmax")} for t in left_out
    ]


def dft_triples(
    db_path: str,
    settings_hash: str | None = None,
    engine: str = "gpaw",
    max_h_force: float | None = None,
    left_out: list | None = None,
    max_state_force: float | None = None,
) -> list[dict]:
    """(host, host+H, H2) label rows of one settings hash with converged ``engine`` energies, on the builder's
    geometries and on the model-relaxed geometries of ``screen validate`` (``geometry`` says which; of a
    validated structure labelled with several settings only the most recent triple is kept, unless
    ``settings_hash`` picks the settings).

    Triples whose DFT force on H exceeds ``max_h_force`` (eV/Å; None: ``MAX_H_FORCE``; inf keeps all), or
    whose host or H* single point has a force on any atom above ``max_state_force`` (None:
    ``MAX_STATE_FORCE``; inf keeps all; an inf ``max_h_force`` keeps all too), are left out: appended to
    ``left_out`` when a list is given, each with its ``h_force``, ``host_fmax`` and ``state_fmax``."""
    import ase.db

    from structures import keys as K

    from .bench_dft import DEFAULT_SUPERCELL, GENERATED_FRAMES

    db = ase.db.connect(db_path)
    all_rows = [
        r
        for r in db.select(engine=engine, converged=True)
        if settings_hash is None or r.get("settings_hash") == settings_hash
    ]
    out = []
    for geometry, frames in (("builder", GENERATED_FRAMES), ("validate", ("dft_validation",))):
        rows = [r for r in all_rows if r.get("frame") in frames]
        by_settings: dict[str, dict] = {}
        for r in rows:
            d = by_settings.setdefault(r.get("settings_hash"), {"h2": None, "hosts": {}, "h": []})
            name = r.get(K.NAME, "")
            if name == "H2":
                d["h2"] = r if d["h2"] is None or r.id > d["h2"].id else d["h2"]
            elif r.get(K.SITE) in (None, "", "None"):
                d["hosts"][(r.get(K.HOST), r.get(K.SUPERCELL) or DEFAULT_SUPERCELL)] = r
            else:
                d["h"].append(r)
        found: dict[str, dict] = {}
        for sh, d in by_settings.items():
            if d["h2"] is None:
                continue
            for r in d["h"]:
                cell = r.get(K.SUPERCELL) or DEFAULT_SUPERCELL
                host = d["hosts"].get((r.get(K.HOST), cell))
                if host is None:
                    continue
                e = [host.energy, r.energy, d["h2"].energy]
                atoms3 = [host.toatoms(), r.toatoms(), d["h2"].toatoms()]
                for a, src in zip(atoms3, (host, r, d["h2"])):
                    a.info.update({k: src.get(k) for k in (K.NAME, K.HOST, K.SITE) if src.get(k) is not None})
                triple = {
                    "name": r.get(K.NAME) + ("" if cell == DEFAULT_SUPERCELL else f" ({cell})"),
                    "host": r.get(K.HOST),
                    "geometry": geometry,
                    "settings_hash": sh,
                    "atoms": atoms3,
                    "dft_de": e[1] - e[0] - 0.5 * e[2],
                    "core_s": float(host.get("wall_s", 0) + r.get("wall_s", 0)),
                    "h_force": h_force(r),
                    "host_fmax": max_force(host),  # the host geometry's distance from a DFT minimum
                    "state_fmax": max_force(r),
                    "_id": max(host.id, r.id),
                }
                key = triple["name"] if geometry == "validate" else f"{triple['name']}/{sh}"
                if key not in found or triple["_id"] > found[key]["_id"]:
                    found[key] = triple
        state_cap = max_state_force
        if max_state_force is None and max_h_force is not None and math.isinf(max_h_force):
            state_cap = math.inf  # callers that keep every triple (max_h_force=inf) keep these too
        for t in found.values():
            t = {k: v for k, v in t.items() if k != "_id"}
            if is_geometry_failure(
                max(t["host_fmax"], t["state_fmax"]), t["h_force"], max_h_force, state_cap
            ):
                if left_out is not None:
                    left_out.append(t)
                continue
            out.append(t)
    return out


def left_out_note(left_out: Sequence[dict]) -> str:
    """One Markdown line naming the triples that ``dft_triples`` left out, or ''."""
    if not left_out:
        return ""
    h = [t for t in left_out if t["h_force"] > MAX_H_FORCE]
    other = [t for t in left_out if t["h_force"] <= MAX_H_FORCE]
    parts = []
    if h:
        names = ", ".join(f"{t['name']} ({t['h_force']:.1f} eV/Å)" for t in h)
        parts.append(
            f"{names}: the DFT force on H at the model-relaxed geometry exceeds {MAX_H_FORCE:g} eV/Å"
        )
    if other:
        names = ", ".join(f"{t['name']} ({max(t['host_fmax'], t['state_fmax']):.1f} eV/Å)" for t in other)
        parts.append(
            f"{names}: a DFT force on an atom of the model-relaxed geometry exceeds {MAX_STATE_FORCE:g} eV/Å"
        )
    return (
        f"Left out: {'; '.join(parts)}. Such a single point is far from any minimum and its ΔE_H is no truth "
        "for ΔGH*; it counts as a model geometry failure, not as an error of a few tenths."
    )


def _heldout_figure(plt, C, et, ep, es, nat, ft, fp, fs, figdir) -> None:
    """Held-out energy parity, force parity and coverage curves -> ``figdir/model_card_heldout.png``."""
    import io

    import numpy as np

    from structures.common import atomic_write_bytes

    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    axes[0].errorbar(et / nat, ep / nat, yerr=2 * es / nat, fmt="o", ms=3, alpha=0.5, elinewidth=0.5)
    lo, hi = (et / nat).min(), (et / nat).max()
    axes[0].plot([lo, hi], [lo, hi], "k--", lw=0.8)
    axes[0].set(
        xlabel="reference energy (eV/atom)", ylabel="model energy (eV/atom)", title="held-out energies (±2σ)"
    )
    sel = np.random.default_rng(0).choice(len(ft), size=min(4000, len(ft)), replace=False)
    axes[1].scatter(ft[sel], fp[sel], s=2, alpha=0.4)
    lo, hi = ft.min(), ft.max()
    axes[1].plot([lo, hi], [lo, hi], "k--", lw=0.8)
    axes[1].set(
        xlabel="reference force (eV/Å)", ylabel="model force (eV/Å)", title="held-out force components"
    )
    for name, (y, mu, sg) in {"energy": (et / nat, ep / nat, es / nat), "forces": (ft, fp, fs)}.items():
        lv, obs = C.coverage_curve(y, mu, sg)
        axes[2].plot(lv, obs, label=name)
    axes[2].plot([0, 1], [0, 1], "k--", lw=0.8)
    axes[2].set(xlabel="expected coverage", ylabel="observed coverage", title="calibration (held out)")
    axes[2].legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(figdir / "model_card_heldout.png", buf.getvalue())


def reuse_valid_metrics(path: str, net: str) -> dict[str, Any]:
    """The held-out metrics of an earlier ``bench model`` result (``path``, its JSON) when they were measured on
    the network ``net`` (:func:`potentials.checkpoint.network_hash`: a DFT-anchored copy shares it); else
    InputError saying to pass ``--valid``."""
    import json
    from pathlib import Path

    from structures.common import InputError

    try:
        d = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise InputError(
            f"--reuse-valid {path!r} is not a readable bench result ({exc}); pass --valid"
        ) from exc
    r = d.get("result", d)
    if r.get("network_hash") != net or "energy_per_atom" not in r or "forces" not in r:
        raise InputError(
            f"--reuse-valid {path!r} was measured on network {str(r.get('network_hash'))[:12]}, not this model's "
            f"{net[:12]}; allowed: pass --valid (held-out labelled structures) to measure this network"
        )
    return r


def run(args: argparse.Namespace) -> int:
    import shutil
    from collections import Counter
    from pathlib import Path

    import numpy as np

    from potentials import calibration as C
    from potentials import checkpoint
    from potentials.bayes import load_posterior
    from potentials.checkpoint import load, network_hash
    from potentials.data import read_dataset
    from structures.common import InputError, atomic_write_text, write_bench_result

    post = load_posterior(args.model)
    payload = load(args.model)
    net, h = network_hash(payload), payload["hash"]  # checkpoint.model_hash reads the same field
    reused = None
    if args.valid:
        valid = read_dataset(args.valid)
        if not valid:
            raise InputError(f"--valid {args.valid!r} holds no structures")
        et, ep, es, nat, ft, fp, fs = _predict(post, valid, args.batch_size, args.samples)
        m_e = C.metrics(et / nat, ep / nat, es / nat)
        m_f = C.metrics(ft, fp, fs)
        n_valid, valid_src = len(valid), args.valid
    else:
        reused = reuse_valid_metrics(args.reuse_valid, net)
        m_e, m_f = reused["energy_per_atom"], reused["forces"]
        n_valid, valid_src = int(reused["n_valid"]), str(reused.get("valid") or "?")

    # ---- ΔE_H against plane-wave DFT at the DFT geometries
    from .anchoring import site_class

    dft_rows = []
    left_out: list[dict] = []
    triples = dft_triples(args.dft_db, left_out=left_out) if Path(args.dft_db).exists() else []
    sevenn = sevenn_calculator() if triples and not args.no_sevenn else None
    for t in triples:
        de, sig = triple_de(post, t["atoms"], args.samples)
        row = {
            "name": t["name"],
            "host": t.get("host"),
            "site_class": site_class(t["atoms"][1]),
            "geometry": t["geometry"],
            "dft_de": t["dft_de"],
            "model_de": de,
            "model_sigma": sig,
        }
        if sevenn is not None:
            row["sevenn_de"] = calc_triple_de(sevenn, t["atoms"])
        dft_rows.append(row)

    # ---- figures
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    card = Path(args.card)
    figdir = card.parent
    if reused is None:
        _heldout_figure(plt, C, et, ep, es, nat, ft, fp, fs, figdir)
    elif not (figdir / "model_card_heldout.png").exists():
        raise InputError(
            f"--reuse-valid: {figdir / 'model_card_heldout.png'} (the held-out figure of that run) is missing; "
            "allowed: pass --valid to measure again"
        )

    # ---- data summary
    train_note = str(reused.get("train_note") or "") if reused is not None and not args.train else ""
    # hosts whose DFT labels the model has seen: its checkpoint's record and those in --train
    dft_trained: set[str] = checkpoint.dft_hosts(payload)
    if args.train:
        train = read_dataset(args.train)
        dft_trained |= checkpoint.dft_hosts_of(train)
        counts = Counter(s for a in train for s in set(a.get_chemical_symbols()))
        refs = Counter(str(a.info.get("reference", a.info.get("engine", "?"))) for a in train)
        train_note = (
            f"{len(train)} training structures; reference(s): "
            + ", ".join(f"{k} ({v})" for k, v in refs.items())
            + ".\n\nElement coverage (training structures containing the element): "
            + ", ".join(f"{el} {counts[el]}" for el in post.elements)
            + "."
        )

    def fmt(m, unit, scale):
        return (
            f"| MAE | {scale * m['mae']:.1f} {unit} |\n| RMSE | {scale * m['rmse']:.1f} {unit} |\n"
            f"| NLL | {m['nll']:.2f} |\n| Spearman(|err|, σ) | {m['spearman']:.2f} |\n"
            f"| miscalibration area | {m['miscal_area']:.3f} |\n| 68 % / 95 % coverage | "
            f"{m['coverage_68']:.2f} / {m['coverage_95']:.2f} |\n"
        )

    anchor = getattr(getattr(post, "recal", None), "anchor", None) or None
    fitted = set(anchor.get("hosts", ())) if anchor else set()
    dg_fit = getattr(getattr(post, "recal", None), "dg_fit", None) or None
    sigma_hosts = set(dg_fit.get("hosts", ())) if dg_fit else set()
    for r in dft_rows:
        host = r.get("host")
        r["role"] = (
            "anchor fit"
            if host in fitted
            else "trained on"
            if host in dft_trained
            else "σ calibration"
            if host in sigma_hosts
            else "held out"
        )
    dft_table = "No converged GPAW (host, host+H, H2) triple in the label store yet.\n"
    if dft_rows:
        head = (
            "| structure | geometry | role | DFT ΔE_H (eV) | model ΔE_H ± σ (eV) | model − DFT | SevenNet-0 ΔE_H | "
            "SevenNet-0 − DFT |\n"
        )
        head += "|---|---|---|---|---|---|---|---|\n"
        for r in dft_rows:
            s7, dft = r.get("sevenn_de"), r["dft_de"]
            head += (
                f"| {r['name']} | {r.get('geometry', 'builder')} | {r['role']} | {r['dft_de']:+.3f} | "
                f"{r['model_de']:+.3f} ± {r['model_sigma']:.3f} | "
                f"{r['model_de'] - r['dft_de']:+.3f} | {'' if s7 is None else f'{s7:+.3f}'} | "
                f"{'' if s7 is None else f'{s7 - dft:+.3f}'} |\n"
            )
        test = [r for r in dft_rows if r["role"] == "held out"]
        err = np.array([r["model_de"] - r["dft_de"] for r in test])
        sig = np.array([r["model_sigma"] for r in test])
        s7e = [abs(r["sevenn_de"] - r["dft_de"]) for r in test if r.get("sevenn_de") is not None]
        hosts = sorted({r["host"] for r in dft_rows if r.get("host")})
        dft_table = head + (
            (
                (
                    f"\nOn the {len(test)} structure(s) not used to fit the anchoring"
                    + (" or the σ factor" if sigma_hosts else "")
                    + ": "
                    if anchor
                    else f"\nOn the {len(test)} structure(s) of hosts whose DFT labels it was not trained on"
                    + (" and outside the σ calibration" if sigma_hosts else "")
                    + ": "
                    if dft_trained
                    else f"\nOn the {len(test)} structure(s) outside the σ calibration: "
                    if sigma_hosts
                    else f"\nOn all {len(test)} structure(s) (the model has no DFT anchoring): "
                )
                + "model ΔE_H MAE against DFT "
                f"{np.abs(err).mean():.3f} eV, errors inside 2σ {np.mean(np.abs(err) <= 2 * sig):.2f}"
                + (f"; SevenNet-0 MAE {np.mean(s7e):.3f} eV" if s7e else "")
                + ". "
                + heldout_host_text(test)
                if test
                else "\nEvery structure was used to fit the anchoring or to train: no held-out DFT error yet. "
            )
            + "DFT labels cover the metals "
            + ", ".join(sorted({h.split("2@")[0] for h in hosts}))
            + " and the motifs "
            + ", ".join(sorted({h.split("@")[1] for h in hosts}))
            + " only. Geometry: `builder` = the structure generator's, `validate` = the model-relaxed geometry of "
            "`screen validate` (each with the settings of its most recent labels). Every energy is a single "
            "point at that geometry.\n" + (f"\n{left_out_note(left_out)}\n" if left_out else "")
        )
    heldout_md = heldout_section(args.heldout, h, dft_trained=bool(dft_trained))
    if anchor:
        pairs = anchor.get("pair_offsets") or {}
        classes = anchor.get("class_offsets") or {}
        csig = anchor.get("class_sigma") or {}
        devs = anchor.get("pair_deviations") or {}
        shift = (
            "site by site, before the lowest site is picked, by the offset of what the H binds to ("
            + ", ".join(
                f"H on {c} {float(o):+.3f} eV, σ {float(csig.get(c, float('nan'))):.3f}"
                for c, o in sorted(classes.items())
            )
            + ") plus its metal pair's deviation ("
            + (", ".join(f"{k} {float(v):+.3f}" for k, v in sorted(devs.items())) or "none")
            + " eV); the offsets pool the"
            if classes
            else "by its metal pair's offset ("
            + ", ".join(f"{k} {float(v):+.3f}" for k, v in sorted(pairs.items()))
            + f" eV) or, for the other pairs, by {anchor['offset']:+.3f} eV, the mean"
            if pairs
            else f"by {anchor['offset']:+.3f} eV, the mean"
        )
        sig_text = (
            "the leave-one-host-out error of the chosen site's class"
            if classes
            else "the leave-one-host-out error of those offsets"
        )
        reference_md = (
            f"- **DFT anchoring** (`screen anchor`): every ΔGH* is shifted {shift} "
            f"plane-wave DFT − model ΔE_H of {anchor['n_triples']} DFT triple(s) on the hosts "
            f"{', '.join(anchor['hosts'])} ({anchor.get('preset', '?')} labels), and its σ carries "
            f"{'the σ above' if classes else format(anchor['sigma_add'], '.3f') + ' eV'} in quadrature, {sig_text}. The network "
            "weights are those of the SevenNet-0-trained model; the energy and force errors below say how well "
            "it learned those pre-training labels, not how right it is. Its accuracy is the DFT section."
        )
    else:
        reference_md = (
            "- **Reference labels**: see the data section. The reference it was trained on is **not DFT-grade** "
            "for H* on\n  metal–N–graphene (SevenNet-0 is ~0.5 eV off on average against plane-wave PBE); errors "
            "below against that\n  reference say how well the model reproduces it, not how right it is. The DFT "
            "section is the check against truth."
        )
    if dg_fit:
        c1, c2 = dg_fit.get("loho_coverage", [float("nan")] * 2)
        reference_md += (
            f"\n- **ΔGH* σ calibrated against DFT** (`screen anchor --sigma-only`): every ΔGH* σ is "
            f"{float(dg_fit['factor']):.3f} times the posterior's (factor now {float(post.recal.dg):.3f}), the "
            f"factor that gives the z-scores of {dg_fit['n_triples']} DFT triple(s) on hosts the model never saw "
            f"({', '.join(dg_fit['hosts'])}) unit variance; leave-one-host-out over them, 2σ covers {c2:.2f} "
            f"(1σ {c1:.2f}). Those rows are marked `σ calibration` below and left out of the held-out figures."
        )
    heldout_block = (
        "" if anchor else f"## ΔGH* on held-out hosts against the training reference\n{heldout_md}\n"
    )
    reuse_note = (
        f"Measured on this network (hash {net[:12]}, unchanged by the DFT anchoring) with `--valid {valid_src}` "
        f"by `{args.reuse_valid}` and reused here.\n"
        if reused is not None
        else ""
    )
    text = f"""# Model card: `{Path(args.model).name}`

- **Method**: {post.method} posterior over a RACE equivariant potential (preset elements: {len(post.elements)};
  cutoff {post.cutoff} Å). Hash `{h[:16]}`.
{reference_md}
{args.note}

## Data
{train_note or "Not given."}

## Held-out errors and calibration against the {"pre-training" if anchor else "training"} reference ({n_valid} structures)
{reuse_note}
Energies per atom:

| metric | value |
|---|---|
{fmt(m_e, "meV/atom", 1000)}
Force components:

| metric | value |
|---|---|
{fmt(m_f, "meV/Å", 1000)}
![held-out parity and calibration](model_card_heldout.png)

{heldout_block}## ΔE_H against plane-wave DFT (GPAW PBE, same geometries)
{dft_table}
Produced by `screen bench model --model {args.model}{" --valid " + args.valid if args.valid else ""}{" --train " + args.train if args.train else ""} --dft-db {args.dft_db}`.
"""
    atomic_write_text(card, text)
    result = {
        "model": args.model,
        "model_hash": h,
        "energy_per_atom": m_e,
        "forces": m_f,
        "dft": dft_rows,
        "anchor": anchor,
        "n_valid": n_valid,
        "valid": valid_src,
        "network_hash": net,
        "train_note": train_note,
    }
    table = (
        f"Held-out vs training reference: E MAE {1000 * m_e['mae']:.1f} meV/atom, F MAE {1000 * m_f['mae']:.1f} meV/Å, "
        f"F 95 % coverage {m_f['coverage_95']:.2f}, F miscalibration area {m_f['miscal_area']:.3f}.\n\n"
        + dft_table
    )
    cmd = (
        f"screen bench model --model {args.model}"
        + (f" --valid {args.valid}" if args.valid else "")
        + (f" --train {args.train}" if args.train else "")
    )
    write_bench_result("model", result, cmd, table)
    print(text)
    if figdir.resolve() != Path("benchmarks/figures").resolve():
        Path("benchmarks/figures").mkdir(parents=True, exist_ok=True)
        shutil.copy(figdir / "model_card_heldout.png", "benchmarks/figures/model_card_heldout.png")
    return 0
