"""Structure generator: motif counts from symmetry, geometry sanity on all 460 hosts, H* sites, I/O, CLI."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import numpy as np
import pytest
from ase.data import covalent_radii
from ase.neighborlist import neighbor_list
from hypothesis import given, settings
from hypothesis import strategies as st

from structures import keys as K
from structures.common import InputError
from structures.enumerate import count_structures, iter_structures, metal_pairs
from structures.host import build_host, pocket_indices
from structures.metals import INITIAL_MAGMOM, METALS, resolve_metals
from structures.motifs import (
    METAL_XY,
    SITE_XY,
    catalogue,
    get_motif,
    load_motif_file,
    pocket_group,
    resolve_motifs,
)
from structures.sites import CANDIDATES, add_h, h_sites, site_classes


def _pocket_permutations_from_pymatgen() -> list[tuple[int, ...]]:
    """Independent derivation: the point group of the bare pocket cluster from pymatgen's analyzer."""
    from pymatgen.core import Molecule
    from pymatgen.symmetry.analyzer import PointGroupAnalyzer

    xyz = np.zeros((8, 3))
    xyz[:2, :2] = METAL_XY
    xyz[2:, :2] = SITE_XY
    mol = Molecule(["Fe", "Fe"] + ["C"] * 6, xyz)
    pga = PointGroupAnalyzer(mol, tolerance=0.01)
    assert pga.sch_symbol == "D2h"
    perms = set()
    for op in pga.get_symmetry_operations():
        img = op.operate_multi(xyz - xyz.mean(0)) + xyz.mean(0)
        perm = []
        for p in img[2:]:
            perm.append(int(np.argmin(np.linalg.norm(xyz[2:] - p, axis=1))))
        perms.add(tuple(perm))
    return sorted(perms)


def _orbit_counts(perms) -> dict[int, int]:
    counts = {}
    for k in range(7):
        seen = set()
        n = 0
        for c in itertools.combinations(range(6), k):
            if c in seen:
                continue
            n += 1
            seen |= {tuple(sorted(p[i] for i in c)) for p in perms}
        counts[k] = n
    return counts


def test_motif_counts_follow_from_pocket_symmetry():
    perms = _pocket_permutations_from_pymatgen()
    assert sorted(op.site_perm for op in pocket_group()) == perms
    counts = _orbit_counts(perms)
    # Burnside's lemma as a second, formula-based count
    for k in range(7):
        fixed = 0
        for p in perms:
            cycles = []
            seen = set()
            for i in range(6):
                if i in seen:
                    continue
                j, n = i, 0
                while j not in seen:
                    seen.add(j)
                    j = p[j]
                    n += 1
                cycles.append(n)
            fixed += sum(
                1
                for sel in itertools.product([0, 1], repeat=len(cycles))
                if sum(c for c, s in zip(cycles, sel) if s) == k
            )
        assert fixed % len(perms) == 0
        assert fixed // len(perms) == counts[k]
    by_k = {k: sum(1 for m in catalogue() if m.k == k) for k in range(7)}
    assert by_k == counts
    assert [counts[k] for k in (2, 3, 4, 5)] == [6, 6, 6, 2]
    assert len(resolve_motifs("all")) == sum(counts[k] for k in (2, 3, 4, 5))


def test_motif_orbits_partition_all_decorations():
    for k in range(7):
        total = sum(m.multiplicity for m in catalogue() if m.k == k)
        assert total == len(list(itertools.combinations(range(6), k)))
    assert get_motif("M2N6").n_sites == (0, 1, 2, 3, 4, 5)


@pytest.fixture(scope="module")
def all_hosts():
    return list(iter_structures(METALS, resolve_motifs("all"), with_h=False))


def test_all_by_all_gives_460_hosts_with_right_composition(all_hosts):
    assert len(all_hosts) == 460
    names = {a.info[K.NAME] for a in all_hosts}
    assert len(names) == 460
    for a in all_hosts:
        sym = a.get_chemical_symbols()
        metal = a.info[K.METAL]
        k = a.info[K.N_N]
        assert sym.count(metal) == 2
        assert sum(s not in ("C", "N") for s in sym) == 2
        assert sym.count("N") == k
        assert sym.count("C") == 52 - k
        assert a.info[K.NAME] == f"{metal}2@{a.info[K.MOTIF]}"
        m1, m2, _ = pocket_indices(a)
        assert a.get_initial_magnetic_moments()[[m1, m2]].tolist() == [INITIAL_MAGMOM[metal]] * 2


def test_geometry_is_physically_sane_for_all_hosts(all_hosts):
    for a in all_hosts:
        i, j, d = neighbor_list("ijd", a, 3.6)
        r = covalent_radii[a.numbers]
        assert np.all(d >= 0.75 * (r[i] + r[j])), a.info[K.NAME]
        m1, m2, shell = pocket_indices(a)
        for m, nbrs in ((m1, (0, 1, 4, 5)), (m2, (0, 1, 2, 3))):
            dist = [a.get_distance(m, shell[s], mic=True) for s in nbrs]
            assert 1.8 <= min(dist) and max(dist) <= 2.2, (a.info[K.NAME], dist)
        # pocket images: shortest in-plane lattice vector; vacuum above the highest atom
        cell = a.cell.array
        short = min(
            np.linalg.norm(n1 * cell[0] + n2 * cell[1]) for n1 in (-1, 0, 1) for n2 in (-1, 0, 1) if n1 or n2
        )
        assert short >= 9.0
        z = a.positions[:, 2]
        assert cell[2, 2] - (z.max() - z.min()) >= 15.0


def test_determinism():
    a = build_host("Ru", "4Nd")
    b = build_host("Ru", "4Nd")
    assert (a.numbers == b.numbers).all() and np.array_equal(a.positions, b.positions)
    code = "from structures.host import build_host; import hashlib; a=build_host('Ru','4Nd'); print(hashlib.sha1(a.positions.tobytes()+a.numbers.tobytes()).hexdigest())"
    out = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        for _ in range(2)
    }
    assert len(out) == 1


def _h_fingerprint(atoms, radius=6.0) -> tuple:
    i, j, d = neighbor_list("ijd", atoms, radius)
    h = len(atoms) - 1
    sel = i == h
    return tuple(sorted(zip(atoms.numbers[j[sel]].tolist(), np.round(d[sel], 3).tolist())))


@pytest.mark.parametrize(
    "metal,metal2,motif,expected", [("Fe", "Fe", "6Na", 4), ("Co", "Co", "3Nb", 9), ("Fe", "Co", "6Na", 6)]
)
def test_h_sites_dedupe_matches_geometric_equivalence(metal, metal2, motif, expected):
    host = build_host(metal, motif, metal2=metal2)
    classes = site_classes(get_motif(motif).n_sites, metal != metal2)
    assert len(classes) == expected == len(h_sites(host))
    assert sorted(sum(classes, [])) == sorted(CANDIDATES)
    # every candidate placed explicitly: equivalent candidates have identical local environments, others differ
    hs = {s.label: s for s in h_sites(host)}
    prints = {}
    for cls in classes:
        for label in cls:
            from structures.sites import HSite

            ref = hs[cls[0]]
            # place H at the candidate `label` by the same rule used for representatives
            probe = _place(host, label)
            prints[label] = _h_fingerprint(add_h(host, HSite(label, probe, 1)))
        assert len({prints[label] for label in cls}) == 1, cls
        assert prints[cls[0]] == _h_fingerprint(add_h(host, ref))
    reps = [prints[c[0]] for c in classes]
    assert len(set(reps)) == len(reps)


def _place(host, label):
    from structures.sites import H_BRIDGE_MH, H_TOP_C, H_TOP_METAL, H_TOP_N

    m1, m2, shell = pocket_indices(host)
    p = host.positions
    up = np.array([0, 0, 1.0])
    if label.startswith("top_M"):
        return tuple(p[m1 if label == "top_M1" else m2] + H_TOP_METAL * up)
    if label == "bridge_MM":
        half = 0.5 * np.linalg.norm(p[m1] - p[m2])
        return tuple(0.5 * (p[m1] + p[m2]) + np.sqrt(max(H_BRIDGE_MH**2 - half**2, 0.25)) * up)
    i = shell[int(label[-1])]
    return tuple(p[i] + (H_TOP_N if host[i].symbol == "N" else H_TOP_C) * up)


def test_h_states_are_sane():
    for atoms in iter_structures(["Hf", "Ni"], resolve_motifs("all")):
        if atoms.info[K.SITE] is None:
            continue
        h = atoms.info[K.ADSORBATE_INDEX]
        assert atoms[h].symbol == "H"
        d = atoms.get_distances(h, list(range(h)), mic=True)
        r = covalent_radii[atoms.numbers]
        assert np.all(d >= 0.75 * (r[h] + r[:h]))
        assert d.min() < 1.9  # bound to something
        assert atoms.info[K.NAME] == f"{atoms.info[K.HOST]}+H@{atoms.info[K.SITE]}"


def test_counts_and_hetero_pairs():
    motifs = resolve_motifs("all")
    assert count_structures(METALS, motifs) == len(list(iter_structures(METALS, motifs)))
    pairs = metal_pairs(["Fe", "Co", "Ni"], "hetero")
    assert pairs == [("Fe", "Co"), ("Fe", "Ni"), ("Co", "Ni")]
    hosts = list(iter_structures(["Fe", "Co", "Ni"], motifs[:2], pairs="hetero", with_h=False))
    assert len(hosts) == 6
    a = hosts[0]
    assert a.info[K.NAME] == "FeCo@2Na" and a.get_chemical_symbols()[-2:] == ["Fe", "Co"]


def test_user_motif_file(tmp_path):
    f = tmp_path / "mine.json"
    f.write_text(json.dumps({"name": "myN3", "n_sites": [0, 2, 5]}))
    (m,) = resolve_motifs(str(f))
    assert m.name == "myN3" and m.n_sites == (0, 2, 5)
    a = build_host("Fe", m)
    assert a.get_chemical_symbols().count("N") == 3 and a.info[K.NAME] == "Fe2@myN3"
    t = tmp_path / "two.toml"
    t.write_text('name = "twoN"\nn_sites = [2, 3]\n')
    assert load_motif_file(t).n_sites == (2, 3)
    for bad in ('{"n_sites": [0, 9]}', '{"name": "x"}', "not json", '{"n_sites": [1, 1]}'):
        f.write_text(bad)
        with pytest.raises(InputError, match="mine.json"):
            load_motif_file(f)


def test_round_trip_extxyz_and_db(tmp_path):
    from ase.io import read

    from structures.writers import write_structures

    motifs = resolve_motifs("2Na,5Nb")
    ref = list(iter_structures(["Fe"], motifs))
    write_structures(tmp_path / "x", ["Fe"], motifs, fmt="extxyz")
    got = read(tmp_path / "x" / "structures.extxyz", ":")
    write_structures(tmp_path / "d", ["Fe"], motifs, fmt="db")
    import ase.db

    rows = list(ase.db.connect(tmp_path / "d" / "structures.db").select())
    assert len(got) == len(rows) == len(ref)
    for a, b, row in zip(ref, got, rows):
        c = row.toatoms()
        for other in (b, c):
            assert (a.numbers == other.numbers).all()
            np.testing.assert_allclose(a.positions, other.positions, atol=1e-8)
            np.testing.assert_allclose(a.get_initial_magnetic_moments(), other.get_initial_magnetic_moments())
        assert b.info[K.NAME] == a.info[K.NAME] == row.name
        assert b.info[K.MOTIF] == row.motif == a.info[K.MOTIF]


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "cli", *args], capture_output=True, text=True, cwd=cwd)


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--metals", "Fe,Xx"], "unknown metal 'Xx'"),
        (["--motifs", "2Na,9Nz"], "unknown motif '9Nz'"),
        (["--format", "cif"], "unknown format 'cif'"),
        (["--pairs", "triple"], "unknown pair mode 'triple'"),
        (["--metals", "Fe", "--pairs", "hetero"], "at least two metals"),
    ],
)
def test_cli_bad_input_writes_nothing(tmp_path, args, needle):
    out = tmp_path / "out"
    r = _cli("structures", "--out", str(out), *args)
    assert r.returncode == 2
    assert needle in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_cli_refuses_non_empty_folder_and_writes_vasp(tmp_path):
    out = tmp_path / "v"
    r = _cli("structures", "--metals", "Ni", "--motifs", "6Na", "--out", str(out), "--format", "vasp")
    assert r.returncode == 0, r.stderr
    poscars = sorted(out.glob("*/POSCAR"))
    assert len(poscars) == 1 + len(site_classes(get_motif("6Na").n_sites, False))
    r2 = _cli("structures", "--metals", "Ni", "--motifs", "6Na", "--out", str(out))
    assert r2.returncode == 2 and "not empty" in r2.stderr
    assert sorted(out.glob("*/POSCAR")) == poscars


def test_cli_motifs_and_version():
    r = _cli("motifs")
    assert r.returncode == 0 and "20 motifs" in r.stdout
    assert _cli("--version").stdout.strip().startswith("screen ")


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=20))
def test_resolvers_never_crash_on_arbitrary_text(text):
    for resolver in (resolve_metals, resolve_motifs):
        try:
            out = resolver(text)
        except InputError as exc:
            assert "\n" not in str(exc)
        else:
            assert len(out) >= 1
