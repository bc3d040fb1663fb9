"""The screen: enumerate hosts and H* states, relax in batches, compute ΔGH*, stability, flags; store all.

Stages (each resumable; finished work is looked up in the store by uid and skipped):

1. references -- H2 and the metal-free pocket of every selected motif (relaxed), bulk metals (lattice scan);
2. relaxations -- hosts first, then every H* state started from its relaxed host, in chunks sent to an
   executor (serial / joblib / Dask); the parent writes each finished result (initial + relaxed row,
   flags) in a transaction;
3. evaluation -- per host, ONE ``posterior.predict`` call with K samples over H2, pocket, bulk(s), host and
   all its relaxed H* states: ΔGH* at the mean-lowest site with σ (epistemic, aleatoric, total),
   formation energy with σ, host flags; written as one ``kind="dg"`` row per host.
"""

from __future__ import annotations

import functools
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from ase import Atoms

from structures import keys as SK
from structures.common import InputError

from .anchoring import class_offsets_text, site_class
from .dgh import DGConfig, dg_anchor, dg_from_stats, dg_sigma_scale, h2_molecule, predict_energies
from .flags import (
    FlagConfig,
    dg_flags,
    high_variance_note,
    order,
    pair_stretch,
    stretch_flags,
    structure_flags,
    to_booleans,
    to_string,
)
from .relax import RelaxConfig, relax_many, resolve_device
from .stability import (
    StabilityConfig,
    bulk_reference,
    formation_from_stats,
    pocket_name,
    pocket_reference,
    scan_bulk,
)
from .store import Store, code_version, dg_uid, load_results, short_hash, structure_uid

DEFAULT_MODEL = "potentials/models/default.pt"


@dataclass(frozen=True)
class ScreenConfig:
    """Everything ``screen run`` needs besides the model and the database."""

    metals: str = "all"  # "all" or "Fe,Co"
    motifs: str = "all"  # "all", "2Na,3Nb" or a motif file
    pairs: str = "homo"  # "homo" | "hetero"
    supercell: str = (
        "4x4"  # the cell of the committed DFT labels, so model and DFT ΔGH* compare like for like
    )
    limit: int | None = None  # first N hosts of the selection (with all their H* states)
    relax: RelaxConfig = field(default_factory=RelaxConfig)
    dg: DGConfig = field(default_factory=DGConfig)
    stability: StabilityConfig = field(default_factory=StabilityConfig)
    flags: FlagConfig = field(default_factory=FlagConfig)
    device: str = "auto"  # auto | cpu | cuda[:i]
    workers: int = 1
    scheduler: str | None = None
    chunk_size: int | None = None  # structures per executor task (default: all in one stream when serial,
    #                                about 4 tasks per worker otherwise)
    eval_hosts: int = 8  # hosts per predict call in the evaluation stage
    h_on_relaxed_host: bool = True  # H* states start from the relaxed host (hosts are relaxed first)
    progress: bool = True

    @property
    def relax_hash(self) -> str:
        return short_hash(
            {"relax": self.relax.result_fields(), "h_on_relaxed_host": self.h_on_relaxed_host}, prefix="r"
        )

    def result_settings(self) -> dict[str, Any]:
        """The settings that change stored results (hashed into ``settings_hash``)."""
        return {
            "relax": self.relax.result_fields(),
            "h_on_relaxed_host": self.h_on_relaxed_host,
            "dg": asdict(self.dg),
            "stability": asdict(self.stability),
            "flags": asdict(self.flags),
        }

    @property
    def settings_hash(self) -> str:
        return short_hash(self.result_settings(), prefix="s")


@dataclass
class ModelHandle:
    """A loaded posterior plus how to load it again in a worker (a picklable loader)."""

    loader: Callable[[], Any]
    posterior: Any
    model_hash: str
    path: str = ""
    net_hash: str = (
        ""  # hash of its relaxations (checkpoint.relaxation_hash: no DFT anchoring); "" = model_hash
    )

    @property
    def structure_hash(self) -> str:
        """The hash that keys relaxed structures and references: a model and its anchored copies (`screen
        anchor` changes ΔGH* offsets and σ only) share their relaxations; ΔG rows keep ``model_hash``."""
        return self.net_hash or self.model_hash


@dataclass
class RunSummary:
    db_path: str
    model_hash: str
    settings_hash: str
    n_hosts: int
    n_structures: int
    n_relaxed: int  # relaxed in this run
    n_skipped: int  # found finished in the store
    n_references: int  # references computed in this run
    n_dg: int  # ΔG rows written in this run
    n_evaluations: int  # structure-force evaluations in this run
    relax_wall_s: float
    wall_s: float
    results: Any = None  # pandas DataFrame (load_results of this model and settings)
    status_counts: dict[str, int] = field(default_factory=dict)  # relaxation status -> structures (selection)
    anchor: dict[str, Any] | None = None  # the model's DFT anchoring of ΔGH* (screen anchor), if any
    dg_fit: dict[str, Any] | None = (
        None  # its ΔGH* σ factor fitted on DFT (screen anchor --sigma-only), if any
    )


# ---- model -----------------------------------------------------------------------------------
def load_checkpoint_posterior(path: str) -> Any:
    """Picklable loader used by workers: ``potentials.bayes.load_posterior(path)``."""
    from potentials.bayes import load_posterior

    return load_posterior(path)


def default_model_path() -> Path:
    import potentials

    return Path(potentials.__file__).resolve().parent / "models" / "default.pt"


def load_model(path: str | os.PathLike | None) -> ModelHandle:
    """Load a checkpoint (``None``: the embedded default). InputError for missing / unreadable / bad files."""
    if path is None:
        p = default_model_path()
        if not p.is_file():
            raise InputError(
                f"the default model {DEFAULT_MODEL} is not installed in this build ({p} missing); "
                "train one with `screen train` and pass --model PATH"
            )
    else:
        p = Path(path)
        if not p.is_file():
            raise InputError(
                f"model file '{path}' not found; pass --model PATH to a checkpoint written by `screen train`"
            )
    from potentials import checkpoint

    try:
        payload = checkpoint.load(p)
        digest, net = payload["hash"], checkpoint.relaxation_hash(payload)
        loader = functools.partial(load_checkpoint_posterior, str(p))
        posterior = loader()
    except InputError as exc:
        raise InputError(f"cannot use model '{p}': {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - anything else means an incompatible file
        raise InputError(
            f"cannot use model '{p}': {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc
    return ModelHandle(
        loader=loader,
        posterior=posterior,
        model_hash="m" + digest[:16],
        path=str(p.resolve()),  # the run record names it; reports read its DFT anchoring from any folder
        net_hash="m" + net[:16],
    )


def handle_from_loader(loader: Callable[[], Any]) -> ModelHandle:
    """A ModelHandle for an in-memory posterior factory (tests, benchmarks)."""
    posterior = loader()
    digest = getattr(posterior, "model_hash", None) or repr(loader)
    return ModelHandle(loader=loader, posterior=posterior, model_hash=short_hash(digest, prefix="m"), path="")


# ---- selection -------------------------------------------------------------------------------
@dataclass
class HostGroup:
    name: str
    host: Atoms
    states: list[Atoms]


def select_structures(config: ScreenConfig) -> list[HostGroup]:
    """Hosts (with their H* states) of the selection, in catalogue order; InputError on bad or empty input."""
    from structures.enumerate import PAIRS, iter_structures
    from structures.metals import resolve_metals
    from structures.motifs import resolve_motifs

    metals = resolve_metals(config.metals)
    motifs = resolve_motifs(config.motifs)
    if config.pairs not in PAIRS:
        raise InputError(f"unknown pair mode '{config.pairs}'; allowed: {', '.join(PAIRS)}")
    if config.limit is not None and config.limit < 1:
        raise InputError(f"--limit {config.limit} not allowed; need an integer >= 1")
    groups: list[HostGroup] = []
    for atoms in iter_structures(metals, motifs, pairs=config.pairs, with_h=True, supercell=config.supercell):
        if atoms.info.get(SK.SITE) in (None, ""):
            if config.limit is not None and len(groups) >= config.limit:
                break
            groups.append(HostGroup(atoms.info[SK.HOST], atoms, []))
        else:
            groups[-1].states.append(atoms)
    if not groups:
        raise InputError(
            f"empty selection: metals '{config.metals}', motifs '{config.motifs}', pairs '{config.pairs}' give no host"
            + (" (hetero pairs need at least two metals)" if config.pairs == "hetero" else "")
        )
    return groups


def check_model_covers(posterior: Any, groups: list[HostGroup]) -> None:
    needed = {"H"} | {s for g in groups for s in g.host.get_chemical_symbols()}
    missing = sorted(needed - set(posterior.elements))
    if missing:
        raise InputError(
            f"the model does not cover element(s) {', '.join(missing)} of this selection; "
            f"model elements: {', '.join(posterior.elements)}"
        )


# ---- stages ----------------------------------------------------------------------------------
def _uid(atoms: Atoms, handle: ModelHandle, config: ScreenConfig) -> str:
    return structure_uid(
        atoms.info[SK.NAME], atoms.info.get(SK.SUPERCELL, ""), handle.structure_hash, config.relax_hash
    )


def _reference_structures(groups: list[HostGroup], config: ScreenConfig) -> tuple[list[Atoms], list[Atoms]]:
    """([H2, pockets...] to relax, [bulk metals] to scan)."""
    relax: list[Atoms] = [h2_molecule()]
    seen: set[str] = set()
    metals: list[str] = []
    for g in groups:
        motif = g.host.info[SK.MOTIF]
        if motif not in seen:
            seen.add(motif)
            relax.append(pocket_reference(g.host))
        for m in (g.host.info[SK.METAL], g.host.info[SK.METAL2]):
            if m not in metals:
                metals.append(m)
    return relax, [bulk_reference(m) for m in metals]


def _ref_uid(name: str, handle: ModelHandle, config: ScreenConfig) -> str:
    return structure_uid(name, "", handle.structure_hash, config.relax_hash, kind="reference")


def compute_references(
    store: Store, groups: list[HostGroup], handle: ModelHandle, config: ScreenConfig, device: str
) -> int:
    """Relax / scan the references that the store lacks; returns how many were computed."""
    to_relax, bulks = _reference_structures(groups, config)
    done = store.uids(kind="reference", model_hash=handle.structure_hash, relax_hash=config.relax_hash)
    to_relax = [a for a in to_relax if _ref_uid(a.info[SK.NAME], handle, config) not in done]
    bulks = [a for a in bulks if _ref_uid(a.info[SK.NAME], handle, config) not in done]
    post = handle.posterior
    n = 0
    for r in relax_many(to_relax, post.mean_forward, config=config.relax, device=device):
        atoms = to_relax[r.index]
        store.write_reference(atoms, r, handle.structure_hash, config.relax_hash, atoms.info["ref_kind"])
        n += 1
    scanned = [scan_bulk(post, b, config.stability.bulk_scales, device=device) for b in bulks]
    fixed = replace(config.relax, max_steps=0)
    for r in relax_many(scanned, post.mean_forward, config=fixed, device=device):
        atoms = scanned[r.index]
        r.atoms.info["lattice_scale"] = atoms.info["lattice_scale"]
        store.write_reference(atoms, r, handle.structure_hash, config.relax_hash, "bulk")
        n += 1
    return n


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(
        total=total, desc=desc, unit="struct", disable=not enabled, dynamic_ncols=True, file=sys.stderr
    )


USABLE_HOST_STATUS = ("converged", "max_steps", "oscillating")  # relaxed hosts good enough to put H on


def relax_structures(
    store: Store,
    groups: list[HostGroup],
    handle: ModelHandle,
    config: ScreenConfig,
    device: str,
    executor=None,
) -> tuple[int, int, int, float]:
    """Relax every structure the store lacks. Returns (relaxed now, skipped, evaluations, wall s).

    With ``config.h_on_relaxed_host`` hosts go first and each H* state starts from its relaxed host
    (H placed by ``structures.sites`` on the relaxed geometry), so the states only relax locally;
    a host whose relaxation failed (non-finite, exploded) gives its states the unrelaxed geometry.
    """
    from .executors import SerialExecutor

    executor = executor or SerialExecutor()
    if not config.h_on_relaxed_host:
        return _relax_pending(
            store, [a for g in groups for a in (g.host, *g.states)], handle, config, device, executor
        )
    a = _relax_pending(store, [g.host for g in groups], handle, config, device, executor, desc="relax hosts")
    rebuild_states(store, groups, handle, config)
    b = _relax_pending(
        store, [s for g in groups for s in g.states], handle, config, device, executor, desc="relax H*"
    )
    return a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3]


def rebuild_states(store: Store, groups: list[HostGroup], handle: ModelHandle, config: ScreenConfig) -> None:
    """Replace each group's H* states by states built on the relaxed host (same names and site labels)."""
    from structures.sites import add_h, h_sites

    records = store.relaxed(
        [_uid(g.host, handle, config) for g in groups],
        kind="structure",
        state="relaxed",
        model_hash=handle.structure_hash,
        relax_hash=config.relax_hash,
    )
    for g in groups:
        rec = records.get(_uid(g.host, handle, config))
        base = g.host
        if rec is not None and rec.status in USABLE_HOST_STATUS and math.isfinite(rec.energy):
            base = g.host.copy()
            base.positions = rec.atoms.positions
        states = [add_h(base, site) for site in h_sites(base)]
        if [s.info[SK.NAME] for s in states] != [s.info[SK.NAME] for s in g.states]:
            raise RuntimeError(
                f"H* sites of {g.name} changed on relaxation"
            )  # labels depend on symmetry only
        g.states = states


def _relax_pending(
    store: Store,
    everything: list[Atoms],
    handle: ModelHandle,
    config: ScreenConfig,
    device: str,
    executor,
    desc: str = "relax",
) -> tuple[int, int, int, float]:
    from .executors import RelaxTask, relax_task, seed_model, worker_threads

    done = store.uids(
        kind="structure", state="relaxed", model_hash=handle.structure_hash, relax_hash=config.relax_hash
    )
    pending = [a for a in everything if _uid(a, handle, config) not in done]
    skipped = len(everything) - len(pending)
    if not pending:
        return 0, skipped, 0, 0.0
    if config.chunk_size:
        chunk = int(config.chunk_size)
    elif executor.in_process:  # one stream: the batch stays full to the end, results are written as they come
        chunk = len(pending)
    else:  # about four tasks per worker, so that fast workers pick up more
        chunk = max(
            config.relax.batch_size, math.ceil(len(pending) / (4 * getattr(executor, "n_workers", 1)))
        )
    threads = None if executor.in_process else worker_threads(getattr(executor, "n_workers", 1))
    tasks = [
        RelaxTask(i, pending[s : s + chunk], handle.loader, config.relax, device, threads)
        for i, s in enumerate(range(0, len(pending), chunk))
    ]
    written: set[tuple[int, int]] = set()
    buffer: list[tuple[Atoms, Any, list[str]]] = []
    bar = _progress(len(pending), desc, config.progress)
    t0 = time.perf_counter()
    n_evals = 0
    flush_every = max(8, config.relax.batch_size)

    def add(task: RelaxTask, r) -> None:
        key = (task.task_id, r.index)
        if key in written:
            return
        written.add(key)
        initial = task.structures[r.index]
        buffer.append((initial, r, structure_flags(initial, r.atoms, r.status, r.energy, config.flags)))
        bar.update(1)

    def flush() -> None:
        store.write_structures(buffer, handle.structure_hash, config.relax_hash)
        buffer.clear()

    try:
        if executor.in_process:
            seed_model(handle.loader, device, handle.posterior)

            def on_result(task: RelaxTask, r) -> None:
                add(task, r)
                if len(buffer) >= flush_every:
                    flush()

            outputs = executor.map_unordered(relax_task, tasks, on_result=on_result)
        else:
            outputs = executor.map_unordered(relax_task, tasks)
        by_id = {t.task_id: t for t in tasks}
        for out in outputs:
            for r in out.results:
                add(by_id[out.task_id], r)
            n_evals += out.n_evaluations
            flush()
    except BaseException:
        if buffer:  # interrupted or failed elsewhere: the buffered results are complete, keep them
            try:
                flush()
            except Exception:  # noqa: BLE001 - the original error matters more
                pass
        raise
    finally:
        bar.close()
    return len(written), skipped, n_evals, time.perf_counter() - t0


def evaluate_hosts(
    store: Store, groups: list[HostGroup], handle: ModelHandle, config: ScreenConfig, device: str
) -> int:
    """ΔGH*, formation energy and flags of every host that lacks a ΔG row; returns rows written."""
    mh, rh, sh = handle.model_hash, config.relax_hash, config.settings_hash
    done = store.uids(kind="dg", model_hash=mh, settings_hash=sh)
    todo = [g for g in groups if dg_uid(g.name, g.host.info.get(SK.SUPERCELL, ""), mh, sh) not in done]
    if not todo:
        return 0
    # positions only (not Atoms) for the whole selection; Atoms are rebuilt per chunk on the group's own
    # structures (same numbers, cell and info), so memory stays ~1 KB per structure
    net = handle.structure_hash
    geometries = store.relaxed_geometries(kind="structure", state="relaxed", model_hash=net, relax_hash=rh)
    refs = {
        rec.atoms.info[SK.NAME]: rec
        for rec in store.relaxed(kind="reference", model_hash=net, relax_hash=rh).values()
    }
    ready = []
    for g in todo:
        uids = [_uid(a, handle, config) for a in (g.host, *g.states)]
        if all(u in geometries for u in uids):
            ready.append((g, uids))
    bar = _progress(len(ready), "ΔGH*", config.progress)
    n = 0
    try:
        for start in range(0, len(ready), max(1, config.eval_hosts)):
            chunk = [
                (g, [geometries[u].record(u, a) for u, a in zip(uids, (g.host, *g.states), strict=True)])
                for g, uids in ready[start : start + config.eval_hosts]
            ]
            rows = _evaluate_chunk(chunk, refs, handle, config, device)
            n += store.write_dg_rows(rows)
            bar.update(len(chunk))
    finally:
        bar.close()
    return n


def _evaluate_chunk(
    chunk, refs, handle: ModelHandle, config: ScreenConfig, device: str
) -> list[dict[str, Any]]:
    """ONE predict call for H2, the chunk's pockets and bulks, hosts and their states; one row per host."""
    names: list[str] = ["H2"]
    for g, _ in chunk:
        h = g.host.info
        for ref in (
            pocket_name(h[SK.MOTIF], h.get(SK.SUPERCELL, "2r7")),
            f"bulk@{h[SK.METAL]}",
            f"bulk@{h[SK.METAL2]}",
        ):
            if ref not in names:
                names.append(ref)
    missing = [nm for nm in names if nm not in refs]
    if missing:
        raise RuntimeError(f"references missing from the store: {', '.join(missing)}")
    atoms_list = [refs[nm].atoms for nm in names]
    index = {nm: i for i, nm in enumerate(names)}
    spans = []
    for _g, recs in chunk:
        spans.append((len(atoms_list), len(recs)))
        atoms_list.extend(rec.atoms for rec in recs)
    stats = predict_energies(handle.posterior, atoms_list, n_samples=config.dg.n_samples, device=device)
    h2 = stats.take([index["H2"]])
    rows = []
    version = code_version()
    for (g, recs), (s0, count) in zip(chunk, spans):
        info = g.host.info
        host_rec, state_recs = recs[0], recs[1:]
        host_stats = stats.take([s0])
        state_stats = stats.take(range(s0 + 1, s0 + count))
        labels = [str(r.atoms.info.get(SK.SITE)) for r in state_recs]
        eligible = [
            "h_desorbed" not in r.flags
            and "nonfinite" not in r.flags
            and r.status not in ("exploded", "nonfinite")
            for r in state_recs
        ]
        row: dict[str, Any] = {
            k: info.get(k) for k in (SK.HOST, SK.METAL, SK.METAL2, SK.MOTIF, SK.N_N, SK.N_SITES, SK.SUPERCELL)
        }
        flags = set(host_rec.flags)
        data: dict[str, Any] = {}
        mask = np.ones(stats.samples.shape[0], dtype=bool)  # posterior samples kept (finite)
        if state_recs:
            classes = [site_class(r.atoms) for r in state_recs]
            dg = dg_from_stats(
                host_stats,
                state_stats,
                labels,
                h2,
                config.dg,
                eligible,
                dg_sigma_scale(handle.posterior),
                dg_anchor(handle.posterior, info.get(SK.HOST), classes),
            )
            best = state_recs[dg.best_index]
            stretch = pair_stretch(host_rec.atoms, best.atoms)
            flags |= set(best.flags) | set(dg_flags(dg.dg, dg.dg_std, config.flags))
            flags |= set(stretch_flags(stretch, config.flags))
            converged = host_rec.status == "converged" and best.status == "converged"
            row.update(
                best_site=dg.best_site,
                best_site_class=classes[dg.best_index],
                mm_stretch=stretch,
                dg=dg.dg,
                dg_std=dg.dg_std,
                dg_std_epistemic=dg.dg_std_epistemic,
                dg_std_aleatoric=dg.dg_std_aleatoric,
                site_agreement=dg.site_agreement,
                e_host=dg.e_host,
                e_host_h=dg.e_host_h,
                e_h2=dg.e_h2,
            )
            data.update(site_dg=dg.site_dg, dg_samples=dg.dg_samples)
            if dg.sample_mask is not None:
                mask &= dg.sample_mask
        else:  # a host without H* sites (never produced by the catalogue, kept for custom motifs)
            converged = host_rec.status == "converged"
            flags.add("nonfinite")
            row.update(best_site="-", dg=math.nan, dg_std=math.nan)
        pocket = stats.take([index[pocket_name(info[SK.MOTIF], info.get(SK.SUPERCELL, "2r7"))]])
        b1 = stats.take([index[f"bulk@{info[SK.METAL]}"]])
        b2 = b1 if info[SK.METAL2] == info[SK.METAL] else stats.take([index[f"bulk@{info[SK.METAL2]}"]])
        n1 = len(refs[f"bulk@{info[SK.METAL]}"].atoms)
        n2 = len(refs[f"bulk@{info[SK.METAL2]}"].atoms)
        form = formation_from_stats(host_stats, pocket, [(b1, n1), (b2, n2)], config.stability)
        if form.sample_mask is not None:
            mask &= form.sample_mask
        if form.aggregates:
            flags.add("aggregates")
        if not math.isfinite(form.e_form):
            flags.add("nonfinite")
        flag_list = order(flags)
        row.update(
            e_form=form.e_form,
            e_form_std=form.e_form_std,
            e_form_std_epistemic=form.e_form_std_epistemic,
            e_form_std_aleatoric=form.e_form_std_aleatoric,
            aggregates=form.aggregates,
            converged=converged,
            flags=to_string(flag_list),
            **to_booleans(flag_list),
            n_samples=int(stats.samples.shape[0]),
            n_samples_dropped=int((~mask).sum()),
            correction=config.dg.correction,
            model_hash=handle.model_hash,
            structure_model_hash=handle.structure_hash,
            relax_hash=config.relax_hash,
            settings_hash=config.settings_hash,
            code_version=version,
            uid=dg_uid(g.name, info.get(SK.SUPERCELL, ""), handle.model_hash, config.settings_hash),
        )
        data["e_form_samples"] = form.samples
        row["data"] = data
        rows.append(row)
    return rows


# ---- the run ---------------------------------------------------------------------------------
def run_screen(
    config: ScreenConfig,
    db_path: str | os.PathLike,
    model: ModelHandle | None = None,
    model_path: str | os.PathLike | None = None,
    out: TextIO | None = None,
    top: int = 10,
) -> RunSummary:
    """Run (or resume) the screen into ``db_path``; print the summary table to ``out`` (None: silent)."""
    t0 = time.perf_counter()
    config.dg.validate()
    _validate(config)
    device = str(resolve_device(config.device))
    groups = select_structures(config)
    # check the database before loading the model so that a bad --db fails fast
    from .store import check_database

    check_database(db_path, writable=True)
    handle = model or load_model(model_path)
    check_model_covers(handle.posterior, groups)
    handle.posterior.to(device)
    from .executors import make_executor

    executor = make_executor(config.workers, config.scheduler)  # connect before writing anything
    try:
        with Store(db_path) as store:
            store.write_run(handle.model_hash, config.settings_hash, handle.path, config.result_settings())
            n_refs = compute_references(store, groups, handle, config, device)
            n_relaxed, n_skipped, n_evals, relax_wall = relax_structures(
                store, groups, handle, config, device, executor
            )
            n_dg = evaluate_hosts(store, groups, handle, config, device)
            status_counts = relax_status_counts(store, groups, handle, config)
    finally:
        executor.close()
    results = load_results(db_path, model_hash=handle.model_hash, settings_hash=config.settings_hash)
    hosts = {g.name for g in groups}
    results = results[results["host"].isin(hosts)].reset_index(drop=True)
    summary = RunSummary(
        db_path=str(db_path),
        model_hash=handle.model_hash,
        settings_hash=config.settings_hash,
        n_hosts=len(groups),
        n_structures=sum(1 + len(g.states) for g in groups),
        n_relaxed=n_relaxed,
        n_skipped=n_skipped,
        n_references=n_refs,
        n_dg=n_dg,
        n_evaluations=n_evals,
        relax_wall_s=relax_wall,
        wall_s=time.perf_counter() - t0,
        results=results,
        status_counts=status_counts,
        anchor=getattr(getattr(handle.posterior, "recal", None), "anchor", None),
        dg_fit=getattr(getattr(handle.posterior, "recal", None), "dg_fit", None),
    )
    if out is not None:
        out.write(format_summary(summary, top=top))
    return summary


def relax_status_counts(
    store: Store, groups: list[HostGroup], handle: ModelHandle, config: ScreenConfig
) -> dict[str, int]:
    """How many relaxed structures of the selection ended with each status (converged, exploded, ...)."""
    hosts = {g.name for g in groups}
    counts: dict[str, int] = {}
    rows = store.db.select(
        kind="structure",
        state="relaxed",
        model_hash=handle.structure_hash,
        relax_hash=config.relax_hash,
        include_data=False,
    )
    for row in rows:
        if row.get("host") in hosts:
            status = str(row.get("status", "?"))
            counts[status] = counts.get(status, 0) + 1
    return counts


def _validate(config: ScreenConfig) -> None:
    r = config.relax
    if not (r.fmax > 0 and math.isfinite(r.fmax)):
        raise InputError(f"--fmax {r.fmax} not allowed; need a positive number of eV/Å")
    if r.max_steps < 0:
        raise InputError(f"--max-steps {r.max_steps} not allowed; need an integer >= 0")
    if r.batch_size < 1:
        raise InputError(f"--batch-size {r.batch_size} not allowed; need an integer >= 1")
    if config.workers is None or config.workers < 1:
        raise InputError(f"--workers {config.workers} not allowed; need an integer >= 1")
    if config.eval_hosts < 1:
        raise InputError(f"eval_hosts {config.eval_hosts} not allowed; need an integer >= 1")
    if config.chunk_size is not None and config.chunk_size < 1:
        raise InputError(f"--chunk-size {config.chunk_size} not allowed; need an integer >= 1")


def format_summary(summary: RunSummary, top: int = 10) -> str:
    """The end-of-run table: top candidates by |ΔGH*| with ± σ, formation energy and flags."""
    df = summary.results
    lines = [
        f"screen run: {summary.n_hosts} hosts, {summary.n_structures} structures "
        f"({summary.n_relaxed} relaxed now, {summary.n_skipped} already in the store), "
        f"{summary.n_dg} ΔGH* rows written, {summary.wall_s:.1f} s",
        f"database {summary.db_path}  model {summary.model_hash}  settings {summary.settings_hash}",
    ]
    if summary.dg_fit:
        from reports.tables import dg_fit_text

        lines.append("ΔGH* σ " + dg_fit_text(summary.dg_fit))
    a = summary.anchor
    if a:
        lines.append(
            "ΔGH* anchored to plane-wave DFT: "
            + (f"offsets for {len(a['pair_offsets'])} metal pairs, " if a.get("pair_offsets") else "")
            + f"{'other pairs ' if a.get('pair_offsets') else 'offset '}{a['offset']:+.3f} eV, "
            f"σ_anchor {a['sigma_add']:.3f} eV "
            f"(leave-one-host-out) from {len(a['hosts'])} DFT hosts ({', '.join(a['hosts'])})"
        )
        if a.get("class_offsets"):
            lines.append(
                "  by site class, applied before the lowest site is picked: "
                + class_offsets_text(a)
                + (
                    f"; metal-pair deviations for {len(a['pair_deviations'])} pairs"
                    if a.get("pair_deviations")
                    else ""
                )
            )
    if df is None or len(df) == 0:
        return "\n".join(lines + ["no results"]) + "\n"
    d = df.assign(abs_dg=df["dg"].abs()).sort_values("abs_dg", na_position="last").head(top)
    lines.append("")
    lines.append(f"{'rank':>4}  {'host':<14} {'site (H on)':<18} {'ΔGH* (eV)':>16}  {'E_f (eV)':>16}  flags")
    for rank, (_, r) in enumerate(d.iterrows(), 1):
        dg = f"{r['dg']:+.3f} ± {r['dg_std']:.3f}"
        ef = f"{r['e_form']:+.2f} ± {r['e_form_std']:.2f}"
        cls = r.get("best_site_class")
        site = str(r["best_site"]) + (f" ({cls})" if isinstance(cls, str) and cls else "")
        lines.append(f"{rank:>4}  {r['host']:<14} {site:<18} {dg:>16}  {ef:>16}  {r['flags'] or '-'}")
    n_flag = int((df["flags"] != "").sum())
    lines.append("")
    lines.append(
        f"{n_flag} of {len(df)} hosts flagged (the DFT queue); `screen report --db {summary.db_path}` for the full ranking"
    )
    lines.extend(_fault_lines(summary))
    return "\n".join(lines) + "\n"


def _fault_lines(summary: RunSummary) -> list[str]:
    """Why hosts were flagged, how relaxations ended and how many posterior samples were dropped."""
    from .flags import FLAG_NAMES
    from .relax import STATUSES

    df = summary.results
    lines = []
    reasons = [f"{name} {int(df[f'flag_{name}'].sum())}" for name in FLAG_NAMES if df[f"flag_{name}"].any()]
    if reasons:
        lines.append("flagged hosts by reason: " + ", ".join(reasons))
        finite = np.isfinite(df["dg"].to_numpy(float))
        note = high_variance_note(int(df["flag_high_variance"].sum()), df["dg_std"].to_numpy(float)[finite])
        if note:
            lines.append(note)
        stretched = df.loc[df["flag_pair_stretched"].to_numpy(bool), "host"].astype(str).tolist()
        if stretched:
            lines.append(
                f"pair_stretched ({', '.join(stretched[:5])}{', ...' if len(stretched) > 5 else ''}): the best "
                "H* site moves the metal pair apart, possibly a spurious minimum of the model; `screen validate "
                f"--db {summary.db_path} --select flag:pair_stretched --site-classes metal` also labels a sane site"
            )
    if summary.status_counts:
        known = [s for s in STATUSES if s in summary.status_counts]
        other = sorted(set(summary.status_counts) - set(STATUSES))
        parts = [f"{s} {summary.status_counts[s]}" for s in known + other]
        lines.append("relaxations by outcome: " + ", ".join(parts))
    if "n_samples_dropped" in df:
        dropped = df["n_samples_dropped"].fillna(0).astype(int)
        if int(dropped.sum()):
            lines.append(
                f"non-finite posterior samples dropped: {int(dropped.sum())} in {int((dropped > 0).sum())} host(s)"
            )
    return lines
