"""The results store: an ASE SQLite database (``ase.db``) with one documented schema.

Schema (every row has the key-value pair ``kind``; strings never look like numbers)

``kind="structure"`` -- one row per structure *state*, ``state`` = ``"initial"`` | ``"relaxed"``.
    Atoms: the geometry (the relaxed row also carries energy and forces as a SinglePoint result).
    Keys: ``uid`` (same for both states), ``name``, ``host``, ``metal``, ``metal2``, ``motif``, ``n_N``,
    ``n_sites``, ``site`` ("" for the bare host), ``supercell``, ``pocket``, ``ads_index`` (-1 if none),
    ``model_hash``, ``relax_hash``, ``code_version``; relaxed rows add ``e_relaxed`` (eV), ``f_max``
    (eV/Å), ``n_steps``, ``status`` (converged | max_steps | nonfinite | exploded | oscillating),
    ``converged`` (bool), ``max_disp`` (Å), ``flags`` (comma string) and ``flag_<name>`` booleans.
    Data: ``role`` (per-atom role array of structures.keys).
``kind="reference"`` -- relaxed references shared by all hosts: ``ref_kind`` = h2 | pocket | bulk,
    ``name`` ("H2", "pocket@3Nb/2r7", "bulk@Fe"), ``uid``, ``model_hash``, ``relax_hash``, ``e_relaxed``,
    ``status``, ``n_atoms_ref``; bulk rows add ``lattice_scale``.
``kind="dg"`` -- one row per host and (model, settings): ``uid``, ``host``, ``metal``, ``metal2``,
    ``motif``, ``n_N``, ``n_sites``, ``supercell``, ``best_site``, ``dg``, ``dg_std``,
    ``dg_std_epistemic``, ``dg_std_aleatoric`` (eV), ``site_agreement``, ``e_form``, ``e_form_std``,
    ``e_form_std_epistemic``, ``e_form_std_aleatoric`` (eV), ``aggregates`` (bool), ``converged``
    (bool: host and best H* state converged), ``flags`` + ``flag_<name>``, ``n_samples``,
    ``n_samples_dropped`` (posterior samples dropped for a non-finite energy),
    ``correction``, ``e_host``, ``e_host_h``, ``e_h2``, ``model_hash``, ``relax_hash``, ``settings_hash``,
    ``code_version``, ``structure_model_hash`` (the ``model_hash`` of the structure rows it was computed
    from: the network's hash without DFT anchoring, so anchored copies of a model share relaxations;
    absent in stores written before it, where it equals ``model_hash``). ``best_site_class``: what the H of the best site binds to (metal, N, C; absent before session 10). ``mm_stretch``: M–M distance of the best H* state minus the relaxed host's, Å (absent before session 23). Data: ``site_dg`` {site: eV}, ``dg_samples`` (K,), ``e_form_samples`` (K,).
``kind="run"`` -- one row per (model, settings): ``model_hash``, ``settings_hash``, ``model_path``,
    ``code_version``; data ``settings`` (the full settings dict).

Unique keys: ``uid = sha1(kind | name | supercell | model_hash | relax_hash)`` for structures and
references, ``sha1("dg" | host | supercell | model_hash | settings_hash)`` for ΔG rows, so resuming is
a set lookup. ``relax_hash`` covers what changes geometries (fmax, steps, FIRE); ``settings_hash``
adds what changes ΔG (samples, correction, thresholds), so changing the correction re-uses the
relaxations. Floats that are NaN are stored as NULL and read back as NaN.

Writes happen in the parent process only, in SQLite transactions (``with db:``): a killed run never
leaves half-written rows. One run at a time holds ``<db>.run-lock`` (pid and host); a second run on the
same database is refused with a message naming the holder; a stale lock (dead pid, same host) is taken over
(under a flock of the folder, so two runs started together never both take it). ASE's own ``<db>.lock``
file is not used: a kill inside a write would leave it behind and block every later run.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import socket
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from structures import keys as SK
from structures.common import InputError

from .flags import to_booleans, to_string

INFO_KEYS = (
    SK.NAME,
    SK.HOST,
    SK.METAL,
    SK.METAL2,
    SK.MOTIF,
    SK.N_N,
    SK.N_SITES,
    SK.SITE,
    SK.SUPERCELL,
    SK.POCKET_INDICES,
)


def code_version() -> str:
    try:
        from importlib.metadata import version

        return "v" + version("dacscreen")
    except Exception:  # not installed
        return "v0+unknown"


def short_hash(obj: Any, prefix: str = "h") -> str:
    """Stable hash of a JSON-able object, prefixed so that it never reads as a number."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return f"{prefix}{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def structure_uid(
    name: str, supercell: str, model_hash: str, relax_hash: str, kind: str = "structure"
) -> str:
    return (
        "u" + hashlib.sha1(f"{kind}|{name}|{supercell}|{model_hash}|{relax_hash}".encode()).hexdigest()[:24]
    )


def dg_uid(host: str, supercell: str, model_hash: str, settings_hash: str) -> str:
    return "u" + hashlib.sha1(f"dg|{host}|{supercell}|{model_hash}|{settings_hash}".encode()).hexdigest()[:24]


def _clean(value: Any) -> Any:
    """A value ASE accepts as a key-value pair (None -> "", numpy scalars -> Python)."""
    if value is None:
        return ""
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def _float(value: Any) -> float:
    try:
        return float(value) if value is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


BUSY_TIMEOUT_S = 30.0  # s, how long a check waits for another process's write transaction


def check_database(path: str | os.PathLike, writable: bool) -> Path:
    """InputError unless ``path`` is an ASE SQLite database we can use (or, when writable, a new file)."""
    path = Path(path)
    if path.suffix.lower() != ".db":
        raise InputError(f"database '{path}' must be an SQLite file ending in .db")
    if path.is_dir():
        raise InputError(f"database '{path}' is a directory; give a file path ending in .db")
    if not path.exists():
        if not writable:
            raise InputError(f"database '{path}' does not exist")
        parent = path.parent if str(path.parent) else Path(".")
        if not parent.is_dir():
            raise InputError(f"folder '{parent}' of database '{path}' does not exist")
        if not os.access(parent, os.W_OK):
            raise InputError(f"cannot create database '{path}': folder '{parent}' is read-only")
        return path
    no_write_bits = not (path.stat().st_mode & 0o222)  # read-only even for root
    if writable and (no_write_bits or not os.access(path, os.W_OK) or not os.access(path.parent, os.W_OK)):
        raise InputError(f"database '{path}' is read-only (the file or its folder is not writable)")
    if path.stat().st_size == 0:
        return path
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)
        try:
            ok = con.execute("PRAGMA quick_check").fetchone()[0]
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        finally:
            con.close()
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            raise InputError(
                f"database '{path}' is busy (locked by another process for more than {BUSY_TIMEOUT_S:g} s); try again"
            ) from exc
        raise InputError(f"database '{path}' is corrupt or not an SQLite file ({exc})") from exc
    except sqlite3.DatabaseError as exc:
        raise InputError(f"database '{path}' is corrupt or not an SQLite file ({exc})") from exc
    if ok != "ok":
        raise InputError(f"database '{path}' is corrupt (SQLite quick_check: {ok})")
    if "systems" not in tables:
        raise InputError(f"'{path}' is an SQLite file but not an ASE database (no 'systems' table)")
    return path


@contextmanager
def _folder_guard(folder: Path) -> Iterator[bool]:
    """Serialise lock taking in ``folder`` with flock on the folder (released by the kernel if we die).

    Yields True when the guard is held; False where flock is unsupported (the O_EXCL lock still works,
    but taking over a stale lock is then not race-free).
    """
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            held = True
        except OSError:
            held = False
        yield held
    finally:
        os.close(fd)


class _Lock:
    """``<db>.run-lock`` holding "pid host"; created atomically (O_EXCL).

    Taking the lock (including the takeover of a stale lock left by a killed run) happens under a
    flock on the database's folder, so two runs started together never both take it.
    """

    def __init__(self, db_path: Path):
        self.db_path = db_path
        self.path = db_path.with_name(db_path.name + ".run-lock")  # ase.db uses <db>.lock itself
        self.held = False

    def acquire(self) -> None:
        me = f"{os.getpid()} {socket.gethostname()}"
        folder = self.path.parent if str(self.path.parent) else Path(".")
        with _folder_guard(folder) as guarded:
            for _ in range(3):
                try:
                    fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                except FileExistsError:
                    try:
                        holder = self.path.read_text().split()
                    except FileNotFoundError:  # released meanwhile: try again
                        continue
                    pid = int(holder[0]) if holder and holder[0].isdigit() else -1
                    host = holder[1] if len(holder) > 1 else "?"
                    # under the guard an empty lock file means its writer died before writing its pid
                    stale = (host == socket.gethostname() and not _alive(pid)) or (guarded and not holder)
                    if stale:
                        self.path.unlink(missing_ok=True)  # stale lock of a killed run
                        continue
                    raise InputError(
                        f"database '{self.db_path}' is in use by another screen run (pid {pid} on {host}); "
                        f"wait for it to finish, or delete {self.path} if that run is dead"
                    ) from None
                with os.fdopen(fd, "w") as fh:
                    fh.write(me + "\n")
                    fh.flush()
                    os.fsync(fh.fileno())
                self.held = True
                return
        raise InputError(f"could not take the lock {self.path}")

    def release(self) -> None:
        if self.held:
            try:
                if self.path.read_text().split()[:1] == [str(os.getpid())]:
                    self.path.unlink()
            except OSError:
                pass
            self.held = False


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class StructureRecord:
    """What the store keeps of one relaxed structure (and what evaluation reads back)."""

    uid: str
    atoms: Atoms  # relaxed geometry with info restored
    energy: float
    status: str
    flags: list[str]


@dataclass
class RelaxedGeometry:
    """The compact part of a relaxed row (about 1 KB for a 60-atom structure, vs ~14 KB as Atoms)."""

    positions: np.ndarray  # (N, 3) Å
    energy: float  # eV
    status: str
    flags: list[str]

    def record(self, uid: str, template: Atoms) -> StructureRecord:
        """A StructureRecord on ``template`` (the same structure: numbers, cell, info) at these positions."""
        atoms = template.copy()
        atoms.calc = None
        atoms.set_positions(self.positions, apply_constraint=False)
        return StructureRecord(uid, atoms, self.energy, self.status, list(self.flags))


def _create_database(path: Path) -> None:
    """Create an empty ASE database at ``path`` atomically: the schema is written to a temporary file in the
    same folder, then renamed into place. SQLite runs each CREATE TABLE as its own transaction, so a kill
    during ASE's schema set-up used to leave a file with 'systems' but no 'information' table, which no
    later run could open (found by the random-SIGKILL test)."""
    import ase.db

    tmp = path.with_name(f".{path.name}.init-{os.getpid()}.db")
    try:
        db = ase.db.connect(str(tmp), type="db", append=True, use_lock_file=False)
        db.count(kind="run")  # runs ASE's schema statements
        del db
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


class Store:
    """Writer over an ASE database; use as a context manager (takes and releases the lock)."""

    def __init__(self, path: str | os.PathLike):
        self.path = check_database(path, writable=True)
        self._lock = _Lock(self.path)
        self._db = None

    def __enter__(self) -> Store:
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> None:
        import ase.db

        self._lock.acquire()
        try:
            if not self.path.exists() or self.path.stat().st_size == 0:
                _create_database(self.path)
            # no ASE lock file: a kill inside a write would leave <db>.lock behind and ASE waits for it
            # forever; SQLite's own locking and the run-lock above already give a single writer
            self._db = ase.db.connect(str(self.path), type="db", append=True, use_lock_file=False)
            self._db.count(kind="run")  # creates the tables of a new file; raises on a foreign schema
        except sqlite3.DatabaseError as exc:
            self._lock.release()
            raise InputError(f"database '{self.path}' is corrupt or unreadable ({exc})") from exc
        except BaseException:
            self._lock.release()
            raise

    def close(self) -> None:
        self._db = None
        self._lock.release()

    @property
    def db(self):
        if self._db is None:
            raise RuntimeError("store is not open")
        return self._db

    # ---- reads ---------------------------------------------------------------------------------
    def uids(self, **filters: Any) -> set[str]:
        """uids of rows matching the key-value ``filters`` (e.g. kind="dg", model_hash=...)."""
        return {row.uid for row in self.db.select(include_data=False, **filters)}

    def relaxed(self, uids: Iterable[str] | None = None, **filters: Any) -> dict[str, StructureRecord]:
        """Relaxed structure and reference rows by uid (all matching ``filters`` when ``uids`` is None)."""
        wanted = None if uids is None else set(uids)
        out: dict[str, StructureRecord] = {}
        for row in self.db.select(**filters):
            if row.get("state", "relaxed") != "relaxed" or (wanted is not None and row.uid not in wanted):
                continue
            out[row.uid] = _record(row)
        return out

    def relaxed_geometries(self, **filters: Any) -> dict[str, RelaxedGeometry]:
        """Like :meth:`relaxed` but keeps only positions, energy, status and flags (bounded memory)."""
        out: dict[str, RelaxedGeometry] = {}
        for row in self.db.select(include_data=False, **filters):
            if row.get("state", "relaxed") != "relaxed":
                continue
            kvp = row.key_value_pairs
            flags = [f for f in str(kvp.get("flags", "")).split(",") if f]
            out[row.uid] = RelaxedGeometry(
                np.array(row.positions, dtype=np.float64),
                _float(kvp.get("e_relaxed")),
                str(kvp.get("status", "")),
                flags,
            )
        return out

    # ---- writes (each call is one transaction) --------------------------------------------------
    def write_run(self, model_hash: str, settings_hash: str, model_path: str, settings: dict) -> None:
        if self.db.count(kind="run", model_hash=model_hash, settings_hash=settings_hash):
            return
        with self.db as db:
            db.write(
                Atoms(),
                kind="run",
                model_hash=model_hash,
                settings_hash=settings_hash,
                model_path=str(model_path) or "-",
                code_version=code_version(),
                data={"settings": settings},
            )

    def write_structures(
        self, items: Iterable[tuple[Atoms, Any, list[str]]], model_hash: str, relax_hash: str
    ) -> int:
        """Write (initial atoms, RelaxResult, flags) as initial + relaxed rows in ONE transaction."""
        items = list(items)
        if not items:
            return 0
        version = code_version()
        with self.db as db:
            for initial, result, flags in items:
                info = initial.info
                uid = structure_uid(info[SK.NAME], info.get(SK.SUPERCELL, ""), model_hash, relax_hash)
                base = {k: _clean(info.get(k)) for k in INFO_KEYS}
                ads = info.get(SK.ADSORBATE_INDEX)
                base.update(
                    kind="structure",
                    uid=uid,
                    model_hash=model_hash,
                    relax_hash=relax_hash,
                    code_version=version,
                    ads_index=int(ads) if ads is not None else -1,
                )
                data = {"role": np.asarray(initial.arrays[SK.ROLE])} if SK.ROLE in initial.arrays else {}
                init = initial.copy()
                init.calc = None
                db.write(init, state="initial", data=data, **base)
                relaxed = result.atoms
                if relaxed.calc is None:  # keep the energy in ASE's own column too
                    from ase.calculators.singlepoint import SinglePointCalculator

                    relaxed = relaxed.copy()
                    relaxed.calc = SinglePointCalculator(relaxed, energy=float(result.energy))
                db.write(
                    relaxed,
                    state="relaxed",
                    data=data,
                    e_relaxed=_clean(result.energy),
                    f_max=_clean(result.fmax),
                    n_steps=int(result.n_steps),
                    status=result.status,
                    converged=bool(result.converged),
                    max_disp=_clean(result.max_displacement),
                    flags=to_string(flags),
                    **to_booleans(flags),
                    **base,
                )
        return len(items)

    def write_reference(
        self, atoms: Atoms, result: Any, model_hash: str, relax_hash: str, ref_kind: str
    ) -> str:
        name = atoms.info[SK.NAME]
        uid = structure_uid(name, "", model_hash, relax_hash, kind="reference")
        extra = {"lattice_scale": float(atoms.info["lattice_scale"])} if "lattice_scale" in atoms.info else {}
        with self.db as db:
            db.write(
                result.atoms,
                kind="reference",
                ref_kind=ref_kind,
                name=name,
                uid=uid,
                model_hash=model_hash,
                relax_hash=relax_hash,
                e_relaxed=_clean(result.energy),
                status=result.status,
                converged=bool(result.converged),
                n_atoms_ref=len(atoms),
                code_version=code_version(),
                **extra,
            )
        return uid

    def write_dg_rows(self, rows: Iterable[dict[str, Any]]) -> int:
        """Write ΔG rows (dicts of key-value pairs plus optional ``data``) in ONE transaction."""
        rows = list(rows)
        with self.db as db:
            for row in rows:
                row = dict(row)
                data = row.pop("data", {})
                db.write(Atoms(), kind="dg", data=data, **{k: _clean(v) for k, v in row.items()})
        return len(rows)


def _record(row) -> StructureRecord:
    atoms = row.toatoms(add_additional_information=False)
    kvp = row.key_value_pairs
    for k in INFO_KEYS:
        if k in kvp:
            atoms.info[k] = kvp[k]
    if atoms.info.get(SK.SITE, None) == "":
        atoms.info[SK.SITE] = None
    ads = kvp.get("ads_index", -1)
    if ads is not None and ads >= 0:
        atoms.info[SK.ADSORBATE_INDEX] = int(ads)
    for k in ("ref_kind", "lattice_scale"):
        if k in kvp:
            atoms.info[k] = kvp[k]
    data = row.get("data") or {}
    if "role" in data:
        atoms.arrays[SK.ROLE] = np.asarray(data["role"])
    flags = [f for f in str(kvp.get("flags", "")).split(",") if f]
    return StructureRecord(
        uid=row.uid,
        atoms=atoms,
        energy=_float(kvp.get("e_relaxed")),
        status=str(kvp.get("status", "")),
        flags=flags,
    )


RESULT_COLUMNS = (
    "host", "metal", "metal2", "motif", "n_N", "n_sites", "supercell", "best_site", "dg", "dg_std",
    "dg_std_epistemic", "dg_std_aleatoric", "site_agreement", "e_form", "e_form_std", "e_form_std_epistemic",
    "e_form_std_aleatoric", "aggregates", "flags", "converged", "n_samples", "n_samples_dropped", "correction",
    "e_host", "e_host_h", "e_h2", "model_hash", "relax_hash", "settings_hash", "code_version",
    "structure_model_hash", "best_site_class", "mm_stretch",
)  # fmt: skip
FLOAT_COLUMNS = (
    "dg", "dg_std", "dg_std_epistemic", "dg_std_aleatoric", "site_agreement", "e_form", "e_form_std",
    "e_form_std_epistemic", "e_form_std_aleatoric", "correction", "e_host", "e_host_h", "e_h2", "mm_stretch",
)  # fmt: skip


def load_results(
    db_path: str | os.PathLike,
    model_hash: str | None = None,
    settings_hash: str | None = None,
    with_data: bool = False,
):
    """All ΔG rows of a results database as a pandas DataFrame, one row per host (and model/settings).

    Columns: :data:`RESULT_COLUMNS`, ``flag_<name>`` booleans for every flag, ``id`` (row id) and, with
    ``with_data``, ``site_dg`` (dict) and ``dg_samples`` / ``e_form_samples`` (arrays). Sorted by host.
    Read-only: needs no lock. InputError for a missing, corrupt or non-ASE database.
    """
    import ase.db
    import pandas as pd

    from .flags import FLAG_NAMES

    path = check_database(db_path, writable=False)
    filters: dict[str, Any] = {"kind": "dg"}
    if model_hash:
        filters["model_hash"] = model_hash
    if settings_hash:
        filters["settings_hash"] = settings_hash
    records = []
    try:
        db = ase.db.connect(str(path), type="db")
        for row in db.select(include_data=with_data, **filters):
            kvp = row.key_value_pairs
            rec: dict[str, Any] = {"id": row.id}
            for c in RESULT_COLUMNS:
                rec[c] = kvp.get(c)
            for name in FLAG_NAMES:
                rec[f"flag_{name}"] = bool(kvp.get(f"flag_{name}", False))
            if with_data:
                data = row.get("data") or {}
                rec["site_dg"] = dict(data.get("site_dg", {}))
                rec["dg_samples"] = np.asarray(data.get("dg_samples", []), dtype=float)
                rec["e_form_samples"] = np.asarray(data.get("e_form_samples", []), dtype=float)
            records.append(rec)
    except sqlite3.DatabaseError as exc:
        raise InputError(f"database '{path}' is corrupt or unreadable ({exc})") from exc
    columns = ["id", *RESULT_COLUMNS, *(f"flag_{n}" for n in FLAG_NAMES)]
    if with_data:
        columns += ["site_dg", "dg_samples", "e_form_samples"]
    df = pd.DataFrame.from_records(records, columns=columns)
    for c in FLOAT_COLUMNS:
        df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
    for c in ("n_N", "n_samples", "n_samples_dropped"):
        df[c] = pd.to_numeric(df[c], errors="coerce").astype("Int64")
    for c in ("aggregates", "converged"):
        df[c] = df[c].fillna(False).astype(bool)
    df["flags"] = df["flags"].fillna("").astype(str)
    df["structure_model_hash"] = df["structure_model_hash"].fillna(df["model_hash"])
    return df.sort_values(["host", "model_hash", "settings_hash"], kind="stable").reset_index(drop=True)


def load_structures(db_path: str | os.PathLike, state: str = "relaxed", **filters: Any):
    """Structure rows (``state`` initial | relaxed) as a DataFrame with an ``atoms`` column."""
    import ase.db
    import pandas as pd

    path = check_database(db_path, writable=False)
    db = ase.db.connect(str(path), type="db")
    rows = []
    try:
        for row in db.select(kind="structure", state=state, **filters):
            rec = dict(row.key_value_pairs)
            rec["id"] = row.id
            rec["atoms"] = _record(row).atoms
            rows.append(rec)
    except sqlite3.DatabaseError as exc:
        raise InputError(f"database '{path}' is corrupt or unreadable ({exc})") from exc
    return pd.DataFrame.from_records(rows)
