"""Bad input: malformed data files and checkpoints each give one clear InputError naming the file and the
problem (the CLI prints it on one line and exits 2); property-based tests for the readers and for the
structure generator's inputs."""

from __future__ import annotations

import io
import json
import os
import sqlite3
from pathlib import Path

import ase.db
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cli
from potentials import checkpoint
from potentials.bayes import load_posterior
from potentials.data import atoms_to_graph, read_dataset
from structures.common import InputError

torch.set_num_threads(1)

# RELIABILITY_FUZZ_EXAMPLES=2000 for a long fuzzing session; 40 examples per property in the test suite
FUZZ = settings(
    max_examples=int(os.environ.get("RELIABILITY_FUZZ_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def _labelled(symbols="CuAu", positions=((0, 0, 0), (2.5, 0, 0)), cell=(10, 10, 10), pbc=True, energy=-1.0):
    atoms = Atoms(symbols, positions=positions, cell=cell, pbc=pbc)
    atoms.info["energy"] = energy
    atoms.arrays["forces"] = np.zeros((len(atoms), 3))
    return atoms


def _xyz(path: Path, frames) -> Path:
    write(path, frames, format="extxyz")
    return path


GOOD_XYZ = io.StringIO()
write(GOOD_XYZ, [_labelled(), _labelled(energy=-2.0)], format="extxyz")
GOOD_TEXT = GOOD_XYZ.getvalue()


# ---- data files ----------------------------------------------------------------------------------------------
def _case_files(tmp: Path) -> dict[str, tuple[Path, str]]:
    """name -> (bad file, words the error must contain)."""
    cases: dict[str, tuple[Path, str]] = {}

    def text(name: str, content: str | bytes, expect: str) -> None:
        path = tmp / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        cases[name] = (path, expect)

    text("garbage.xyz", "hello world\nthis is not xyz\n", "cannot read")
    text("truncated.xyz", GOOD_TEXT[: len(GOOD_TEXT) - 25], "cannot read")
    text("atom_count.xyz", "7\n" + GOOD_TEXT.split("\n", 1)[1], "cannot read")
    text("binary.xyz", bytes(range(256)) * 4, "cannot read")
    text("empty.xyz", "", "empty")
    text("blank.xyz", "\n  \n\n", "no structures")
    text("unknown_symbol.xyz", GOOD_TEXT.replace("Cu ", "Xx "), "unknown chemical symbol")
    text("energy_text.xyz", GOOD_TEXT.replace("energy=-1.0", "energy=abc"), "not one number")
    forces_1d = GOOD_TEXT.replace("forces:R:3", "forces:R:1").replace(
        "0.00000000       0.00000000       0.00000000", "0.0"
    )
    text("forces_shape.xyz", forces_1d, "shape")
    nan = _labelled()
    nan.positions[0, 1] = np.nan
    cases["nan_positions.xyz"] = (_xyz(tmp / "nan_positions.xyz", [nan]), "non-finite (NaN/inf) positions")
    inf = _labelled()
    inf.positions[1, 2] = np.inf
    cases["inf_positions.xyz"] = (_xyz(tmp / "inf_positions.xyz", [inf]), "non-finite (NaN/inf) positions")
    overlap = _labelled(positions=((1, 1, 1), (1.1, 1, 1)))
    cases["overlap.xyz"] = (_xyz(tmp / "overlap.xyz", [_labelled(), overlap]), "structure 1 of")
    images = _labelled(cell=(0.05, 10, 10))  # every atom sits on top of its periodic images
    cases["tiny_cell.xyz"] = (_xyz(tmp / "tiny_cell.xyz", [images]), "overlap their periodic images")
    flat = _labelled(cell=((3, 0, 0), (6, 0, 0), (0, 0, 10)))
    cases["degenerate_cell.xyz"] = (_xyz(tmp / "degenerate_cell.xyz", [flat]), "degenerate")
    no_e = _labelled()
    del no_e.info["energy"]
    cases["no_energy.xyz"] = (_xyz(tmp / "no_energy.xyz", [_labelled(), no_e]), "energy key 'energy' missing")
    no_f = _labelled()
    del no_f.arrays["forces"]
    cases["no_forces.xyz"] = (_xyz(tmp / "no_forces.xyz", [no_f]), "forces key 'forces' missing")
    cases["nan_energy.xyz"] = (_xyz(tmp / "nan_energy.xyz", [_labelled(energy=np.nan)]), "non-finite energy")
    # ASE databases
    text("random.db", os.urandom(4096), "cannot read")
    good_db = tmp / "good.db"
    with ase.db.connect(str(good_db)) as db:
        for k in range(30):
            a = _labelled(energy=-1.0 - k)
            a.calc = SinglePointCalculator(a, energy=-1.0 - k, forces=np.zeros((2, 3)))
            db.write(a)
    data = good_db.read_bytes()
    text("truncated.db", data[: len(data) // 3], "cannot read")
    foreign = tmp / "foreign.db"
    con = sqlite3.connect(foreign)
    con.execute("CREATE TABLE results (x REAL)")
    con.commit()
    con.close()
    cases["foreign.db"] = (foreign, "not an ASE database")
    unlabelled = tmp / "unlabelled.db"
    with ase.db.connect(str(unlabelled)) as db:
        db.write(Atoms("Cu2", positions=[(0, 0, 0), (2.5, 0, 0)]))
    cases["unlabelled.db"] = (unlabelled, "energy key 'energy' missing")
    cases["missing.xyz"] = (tmp / "missing.xyz", "not found")
    return cases


CASES = (
    "garbage.xyz truncated.xyz atom_count.xyz binary.xyz empty.xyz blank.xyz unknown_symbol.xyz energy_text.xyz "
    "forces_shape.xyz nan_positions.xyz inf_positions.xyz overlap.xyz tiny_cell.xyz degenerate_cell.xyz "
    "no_energy.xyz no_forces.xyz nan_energy.xyz random.db truncated.db foreign.db unlabelled.db missing.xyz"
).split()


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict[str, tuple[Path, str]]:
    return _case_files(tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize("name", CASES)
def test_bad_data_file_is_one_clear_input_error(bad_files, name):
    path, expect = bad_files[name]
    before = path.read_bytes() if path.exists() else None
    with pytest.raises(InputError) as err:
        read_dataset(path)
    msg = str(err.value)
    assert str(path) in msg and expect in msg and "\n" not in msg, msg
    if before is not None:
        assert path.read_bytes() == before  # reading never modifies the file (ase.db would add its tables)


def test_overlap_message_names_the_atoms(bad_files):
    with pytest.raises(
        InputError, match=r"structure 1 of .*overlap\.xyz: atoms 0 and 1 overlap \(0\.1 Å apart"
    ):
        read_dataset(bad_files["overlap.xyz"][0])


def test_huge_cells_and_far_atoms_are_read_and_graphed(tmp_path):
    frames = [
        _labelled(cell=(1e6, 1e6, 1e6)),  # a huge periodic cell
        _labelled(positions=((0, 0, 0), (5e3, 0, 0)), cell=(0, 0, 0), pbc=False),  # open, very sparse
    ]
    got = read_dataset(_xyz(tmp_path / "huge.xyz", frames))
    for atoms in got:
        graph = atoms_to_graph(atoms, ("Cu", "Au"), 5.0)
        assert graph["edge_index"].shape[1] == (2 if atoms.pbc.all() else 0)


def test_far_atoms_and_giant_cells_with_mixed_periodicity_do_not_kill_the_process(tmp_path):
    """vesin's cell list died with SIGFPE (the whole process) beyond ~1e5 cut-offs; ASE's list takes over.

    Edge counts are checked against ASE's neighbour list (non-periodic cell vectors do not matter).
    """
    from ase.neighborlist import neighbor_list as ase_neighbor_list

    flown = _labelled(positions=((0, 0, 0), (5e5, 0, 0)), cell=(0, 0, 0), pbc=False)
    (flown,) = read_dataset(_xyz(tmp_path / "flown.xyz", [flown]))
    slab = _labelled(positions=((0, 0, 0), (1, 1, 5e5)), cell=(4, 4, 0), pbc=(True, True, False))
    tilted = _labelled("Cu", ((0, 0, 0),), cell=((8, -25, -13), (18, -13, 0), (1e6, 0, 1e6)))
    tilted.pbc = (False, True, True)
    parallel = _labelled(
        cell=((5, 0, 0), (0, 5, 0), (5, 5, 0)), pbc=(True, True, False)
    )  # c in the a-b plane
    for atoms in (flown, slab, tilted, parallel):
        graph = atoms_to_graph(atoms, ("Cu", "Au"), 4.5)
        ref = atoms.copy()
        ref.cell[~ref.pbc] = 0.0
        assert graph["edge_index"].shape[1] == len(ase_neighbor_list("i", ref, 4.5))
    assert atoms_to_graph(slab, ("Cu", "Au"), 4.5)["edge_index"].shape[1] == 8  # atom 0 and its images


def test_cli_prints_the_reader_error_on_one_line(bad_files, tmp_path, capsys):
    path, _ = bad_files["overlap.xyz"]
    assert cli.main(["train", "--data", str(path), "--preset", "tiny", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("screen train: error:") and err.count("\n") == 0 and str(path) in err
    assert not (tmp_path / "o").exists()


# ---- checkpoints ---------------------------------------------------------------------------------------------
class _Payload:
    """A pickled object with a side effect: loading it must never run it."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    from potentials.bayes.point import PointPosterior
    from potentials.model import build_model, preset

    cfg = preset("tiny", elements=("H", "C", "N", "Fe"), dtype="float64")  # no Co
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "good.pt"
    PointPosterior(build_model(cfg), cfg).save(path)
    return path


def _save(path: Path, payload, rehash: bool = False) -> Path:
    if rehash:
        payload = {**payload, "hash": checkpoint.content_hash(payload)}
    buf = io.BytesIO()
    torch.save(payload, buf)
    path.write_bytes(buf.getvalue())
    return path


def _bad_checkpoints(good: Path, tmp: Path) -> dict[str, tuple[Path, str]]:
    payload = checkpoint.load(good)
    data = good.read_bytes()
    (tmp / "truncated.pt").write_bytes(data[: len(data) // 2])
    (tmp / "empty.pt").write_bytes(b"")
    flipped = bytearray(data)
    flipped[len(flipped) // 2] ^= 0x55
    (tmp / "bitflip.pt").write_bytes(bytes(flipped))
    nan_sd = {k: (v * np.nan if v.is_floating_point() else v) for k, v in payload["state_dict"].items()}
    return {
        "truncated": (tmp / "truncated.pt", "truncated or corrupted"),
        "empty": (tmp / "empty.pt", "truncated or corrupted"),
        "bitflip": (tmp / "bitflip.pt", "corrupted"),
        "other_version": (_save(tmp / "v2.pt", {**payload, "format_version": 2}, True), "format version 2"),
        "tampered": (
            _save(tmp / "tampered.pt", {**payload, "elements": ["H", "C", "N", "Co"]}),
            "hash mismatch",
        ),
        "pickled_object": (
            _save(tmp / "pickled.pt", {**payload, "extra": {"x": _Payload(str(tmp / "PWNED"))}}),
            "pickled Python object",
        ),
        "not_a_dict": (_save(tmp / "tensor.pt", torch.zeros(3)), "not a potential checkpoint"),
        "missing_keys": (_save(tmp / "keys.pt", {"format_version": 1}), "lacks key(s)"),
        "bad_config": (
            _save(tmp / "config.pt", {**payload, "config": {"foo": 1}}, True),
            "unknown model config",
        ),
        "wrong_weights": (
            _save(tmp / "weights.pt", {**payload, "state_dict": {"w": torch.zeros(2)}}, True),
            "weights do not match",
        ),
        "nan_weights": (
            _save(tmp / "nan.pt", {**payload, "state_dict": nan_sd}, True),
            "non-finite (NaN/inf)",
        ),
        "unknown_method": (_save(tmp / "method.pt", {**payload, "method": "magic"}, True), "not available"),
        "path_method": (
            _save(tmp / "path.pt", {**payload, "method": "../../os"}, True),
            "not a valid method",
        ),
    }


CKPT_CASES = (
    "truncated empty bitflip other_version tampered pickled_object not_a_dict missing_keys bad_config "
    "wrong_weights nan_weights unknown_method path_method"
).split()


@pytest.fixture(scope="module")
def bad_checkpoints(model_file, tmp_path_factory) -> dict[str, tuple[Path, str]]:
    return _bad_checkpoints(model_file, tmp_path_factory.mktemp("badckpt"))


@pytest.mark.parametrize("name", CKPT_CASES)
def test_bad_checkpoint_is_refused_by_screen_run_with_one_line(bad_checkpoints, name, tmp_path, capsys):
    path, expect = bad_checkpoints[name]
    with pytest.raises(InputError) as err:
        load_posterior(path)
    assert str(path) in str(err.value) and expect in str(err.value)
    db = tmp_path / "r.db"
    argv = ["run", "--metals", "Fe", "--motifs", "3Nb", "--supercell", "4x4", "--model", str(path)]
    argv += ["--db", str(db)]
    assert cli.main(argv) == 2
    line = capsys.readouterr().err.strip()
    assert line.count("\n") == 0 and str(path) in line and expect in line, line
    assert not db.exists()
    assert not (path.parent / "PWNED").exists()  # the pickled object was never executed


def test_checkpoint_with_a_pickled_object_never_runs_it(bad_checkpoints):
    path, _ = bad_checkpoints["pickled_object"]
    for load in (checkpoint.load, checkpoint.model_hash, load_posterior):
        with pytest.raises(InputError, match="refused"):
            load(path)
    assert not (path.parent / "PWNED").exists()


def test_elements_the_model_does_not_know(model_file, tmp_path, capsys):
    argv = ["run", "--metals", "Co", "--motifs", "3Nb", "--supercell", "4x4", "--model", str(model_file),
            "--db", str(tmp_path / "r.db")]  # fmt: skip
    assert cli.main(argv) == 2
    assert "does not cover element(s) Co" in capsys.readouterr().err
    data = _xyz(tmp_path / "cu.xyz", [_labelled("Cu2"), _labelled("Cu2", energy=-1.5)])
    argv = ["train", "--data", str(data), "--preset", "tiny", "--out", str(tmp_path / "ft"), "--init-from",
            str(model_file), "--quiet"]  # fmt: skip
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert str(data) in err and "element(s) Cu" in err and err.count("\n") == 0


# ---- property-based: readers ---------------------------------------------------------------------------------
def _assert_usable(frames) -> None:
    """What read_dataset accepts, the model's graph builder can use."""
    for atoms in frames:
        assert np.isfinite(atoms.positions).all() and np.isfinite(atoms.info["energy"])
        assert atoms.arrays["forces"].shape == (len(atoms), 3) and np.isfinite(atoms.arrays["forces"]).all()
        elements = sorted(set(atoms.get_chemical_symbols()))
        atoms_to_graph(atoms, elements, 4.0)


TOKENS = ["nan", "inf", "-inf", "1e308", "-1e308", "abc", "", "0", "-0.0", "3", "T", "F", '"', "=", "1e-320"]


@FUZZ
@given(
    cut=st.integers(0, len(GOOD_TEXT)),
    token=st.sampled_from(TOKENS),
    where=st.integers(0, 10_000),
    drop=st.integers(0, 12),
)
def test_mutated_extxyz_is_read_or_refused_cleanly(tmp_path_factory, cut, token, where, drop):
    """Truncate, replace one whitespace-separated token, or drop one line of a valid file."""
    words = GOOD_TEXT.split(" ")
    words[where % len(words)] = token
    lines = GOOD_TEXT.splitlines(keepends=True)
    del lines[drop % len(lines)]
    for text in (GOOD_TEXT[:cut], " ".join(words), "".join(lines)):
        path = tmp_path_factory.mktemp("mut") / "m.xyz"
        path.write_text(text)
        try:
            frames = read_dataset(path)
        except InputError as exc:
            assert str(path) in str(exc) and "\n" not in str(exc)
        else:
            _assert_usable(frames)


finite = st.floats(-50, 50, allow_nan=False)
coordinate = st.one_of(finite, st.sampled_from([np.nan, np.inf, -np.inf, 1e6, -1e6]))


@FUZZ
@given(
    n=st.integers(1, 5),
    data=st.data(),
    pbc=st.tuples(st.booleans(), st.booleans(), st.booleans()),
    cell=st.lists(
        st.one_of(st.floats(-30, 30, allow_nan=False), st.sampled_from([0.0, np.nan, 1e6])),
        min_size=9,
        max_size=9,
    ),
    energy=st.one_of(finite, st.sampled_from([np.nan, np.inf])),
)
def test_random_structures_are_read_or_refused_cleanly(tmp_path_factory, n, data, pbc, cell, energy):
    positions = data.draw(st.lists(st.tuples(coordinate, coordinate, coordinate), min_size=n, max_size=n))
    symbols = data.draw(st.lists(st.sampled_from(["H", "C", "N", "Fe", "Co"]), min_size=n, max_size=n))
    atoms = Atoms(symbols, positions=positions, cell=np.reshape(cell, (3, 3)), pbc=pbc)
    atoms.info["energy"] = energy
    atoms.arrays["forces"] = np.asarray(
        data.draw(st.lists(st.tuples(finite, finite, finite), min_size=n, max_size=n))
    )
    path = tmp_path_factory.mktemp("rnd") / "r.xyz"
    try:
        write(path, [atoms], format="extxyz")
    except Exception:  # noqa: BLE001 - ASE cannot even write it: nothing to read
        return
    try:
        frames = read_dataset(path)
    except InputError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)
    else:
        _assert_usable(frames)


@FUZZ
@given(blob=st.binary(max_size=600), suffix=st.sampled_from([".xyz", ".extxyz", ".db"]))
def test_arbitrary_bytes_are_refused_cleanly(tmp_path_factory, blob, suffix):
    path = tmp_path_factory.mktemp("bytes") / f"b{suffix}"
    path.write_bytes(blob)
    try:
        frames = read_dataset(path)
    except InputError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)
    else:
        _assert_usable(frames)


# ---- property-based: the structure generator's inputs --------------------------------------------------------
METALS_OR_JUNK = st.one_of(
    st.sampled_from(["Fe", "Co", "fe", "Ni", "Xx", "", "all", "Fe,Co", "H", "C"]), st.text(max_size=6)
)
MOTIFS_OR_JUNK = st.one_of(
    st.sampled_from(["3Nb", "2Na", "6N", "0N", "M2N6", "9Zz", "", "3nb"]), st.text(max_size=6)
)


@FUZZ
@given(metal=METALS_OR_JUNK, metal2=st.one_of(st.none(), METALS_OR_JUNK), motif=MOTIFS_OR_JUNK,
       supercell=st.sampled_from(["2r7", "4x4", "5x5", "3x3", "", "4X4", "x"]))  # fmt: skip
def test_build_host_accepts_valid_inputs_and_refuses_the_rest(metal, metal2, motif, supercell):
    from structures.host import build_host

    try:
        atoms = build_host(metal, motif, metal2, supercell=supercell)
    except InputError as exc:
        assert "\n" not in str(exc) and str(exc)
        return
    d = atoms.get_all_distances(mic=True)
    assert np.isfinite(atoms.positions).all() and d[np.triu_indices(len(atoms), 1)].min() > 1.0
    assert atoms.info["motif"] and atoms.info["host"].count("@") == 1


@FUZZ
@given(metals=METALS_OR_JUNK, motifs=MOTIFS_OR_JUNK, pairs=st.sampled_from(["homo", "hetero", "both", ""]),
       supercell=st.sampled_from(["4x4", "2r7", "bad"]), limit=st.integers(-1, 2))  # fmt: skip
def test_screen_selection_accepts_valid_inputs_and_refuses_the_rest(metals, motifs, pairs, supercell, limit):
    from screening.pipeline import ScreenConfig, select_structures

    config = ScreenConfig(metals=metals, motifs=motifs, pairs=pairs, supercell=supercell, limit=limit)
    try:
        groups = select_structures(config)
    except InputError as exc:
        assert "\n" not in str(exc) and str(exc)
        return
    assert 1 <= len(groups) <= limit
    assert all(g.states and all(s.info["host"] == g.name for s in g.states) for g in groups)


JSON = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(-10, 10), st.floats(allow_nan=False), st.text(max_size=5)
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=7), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@FUZZ
@given(content=st.one_of(JSON, st.fixed_dictionaries({"n_sites": JSON}), st.fixed_dictionaries(
    {"n_sites": st.lists(st.integers(-2, 8), max_size=7), "name": st.text(max_size=6)})))  # fmt: skip
def test_motif_files_are_validated(tmp_path_factory, content):
    from structures.motifs import load_motif_file

    path = tmp_path_factory.mktemp("motif") / "m.json"
    path.write_text(json.dumps(content))
    try:
        motif = load_motif_file(path)
    except InputError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)
        return
    assert len(set(motif.n_sites)) == len(motif.n_sites) and all(0 <= s <= 5 for s in motif.n_sites)
