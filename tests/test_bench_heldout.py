"""``screen bench heldout``: host selection, the reference ΔGH* and the whole bench with a cheap reference."""

from __future__ import annotations

import argparse
import json
import math

import pytest
import torch

from screening import bench_heldout as B
from screening.pipeline import handle_from_loader
from screening.testing import morse_posterior
from structures.common import InputError

torch.set_num_threads(1)


def _args(tmp_path, *argv):
    """Arguments as `screen bench heldout` parses them (40-step model relaxations, one thread)."""
    parser = argparse.ArgumentParser()
    B.add_arguments(parser)
    common = ["--max-steps", "40", "--threads", "1", "--work", str(tmp_path / "w"), "--root", str(tmp_path)]
    return parser.parse_args([*common, *argv])


def test_pick_heldout_skips_seen_hosts_and_spans_metals():
    seen = {f"Fe2@{x}" for x in ("2Na", "3Na", "4Na")} | {"Co2@2Nb"}
    picked = B.pick_heldout(30, seen, seed=3)
    names = [f"{m}2@{x}" for m, x in picked]
    assert len(names) == 30 and len(set(names)) == 30
    assert not set(names) & seen
    assert len({m for m, _ in picked}) == 23  # every metal before any repeats
    assert len({x for _, x in picked}) >= 15  # motifs are spread, not one motif many times
    assert B.pick_heldout(30, seen, seed=3) == picked  # seeded


def test_reference_dg_takes_the_lowest_finite_site():
    e = {"M": -10.0, "M+H@a": -13.0, "M+H@b": -14.0, "M+H@c": math.nan}
    dg, site = B.reference_dg(e, "M", ["a", "b", "c"], h2=-6.0, correction=0.24)
    assert site == "b" and dg == pytest.approx(-14.0 + 10.0 + 3.0 + 0.24)
    dg, site = B.reference_dg({"M": -10.0}, "M", ["a"], h2=-6.0, correction=0.24)
    assert math.isnan(dg) and site == ""


def test_fit_dg_scale_is_the_rms_z_score():
    assert B.fit_dg_scale([0.2, -0.2, 0.4, -0.4], [0.1, 0.1, 0.2, 0.2]) == pytest.approx(2.0)
    assert B.fit_dg_scale([0.1, float("nan")], [0.1, 0.1]) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        B.fit_dg_scale([float("nan")], [0.1])


def test_bench_heldout_end_to_end_with_emt(tmp_path):
    args = _args(
        tmp_path, "--hosts", "Ni2@3Nb,Cu2@3Nb", "--reference", "emt", "--fmax", "0.1", "--steps", "40"
    )
    assert B.run(args, handle=handle_from_loader(morse_posterior)) == 0
    res = json.loads((tmp_path / "benchmarks" / "results" / "heldout.json").read_text())
    assert res["reference"] == "emt" and {h["host"] for h in res["hosts"]} == {"Ni2@3Nb", "Cu2@3Nb"}
    for h in res["hosts"]:
        assert math.isfinite(h["dg"]) and math.isfinite(h["dg_std"])
        assert "Flags(" not in h["flags"]  # the host's flag string, not pandas' Series.flags
    assert (tmp_path / "benchmarks" / "figures" / "heldout_dgh.png").stat().st_size > 1000
    assert "## heldout" in (tmp_path / "BENCHMARKS.md").read_text()
    cache = json.loads((tmp_path / "w" / "reference_emt.json").read_text())
    assert (
        "H2" in cache and "Ni2@3Nb/4x4" in cache and len(cache) == 1 + 2 * 10
    )  # H2 + 2 hosts x (host + 9 H* sites of 3Nb)
    # resume: a second run relaxes nothing again (every reference energy comes from the cache)
    before = {k: v["wall_s"] for k, v in cache.items()}
    assert B.run(args, handle=handle_from_loader(morse_posterior)) == 0
    after = json.loads((tmp_path / "w" / "reference_emt.json").read_text())
    assert {k: v["wall_s"] for k, v in after.items()} == before
    # the reference at the model's own minimum: EMT single points on the model-relaxed structures
    from ase.calculators.emt import EMT

    from screening.store import load_structures

    st = load_structures(tmp_path / "w" / "results.db").set_index("name")
    for h in res["hosts"]:
        e = {}
        for name in (h["host"], f"{h['host']}+H@{h['site']}"):
            a = st.loc[name, "atoms"].copy()
            a.calc = EMT()
            e[name] = a.get_potential_energy()
        expect = e[f"{h['host']}+H@{h['site']}"] - e[h["host"]] - 0.5 * cache["H2"]["energy"] + 0.24
        assert h["dg_ref_at_model"] == pytest.approx(expect, abs=1e-6)
    assert math.isfinite(res["dg_mae_at_model_geometry_eV"])
    sp = json.loads((tmp_path / "w" / "reference_emt_at_model.json").read_text())
    assert len(sp) == 2 * 10 and all(k.startswith(res["model_hash"] + "/") for k in sp)


def test_calibration_run_fits_the_factor_on_its_hosts(tmp_path, monkeypatch):
    written = {}
    monkeypatch.setattr(B, "write_dg_calibrated", lambda m, out, f: written.update(out=out, f=f) or 2 * f)
    args = _args(tmp_path, "--model", "base.pt", "--hosts", "Ni2@3Nb", "--reference", "emt", "--fmax", "0.1")
    args.calibrate_out = str(tmp_path / "cal.pt")
    assert B.run(args, handle=handle_from_loader(morse_posterior)) == 0
    res = json.loads((tmp_path / "benchmarks" / "results" / "heldout_calibration.json").read_text())
    (h,) = res["hosts"]
    assert written["f"] == pytest.approx(abs(h["dg"] - h["dg_ref"]) / h["dg_std"])
    assert res["calibration"]["new_dg_factor"] == pytest.approx(2 * written["f"])
    assert not (
        tmp_path / "benchmarks" / "results" / "heldout.json"
    ).exists()  # the test section is untouched
    assert "Calibration run" in (tmp_path / "BENCHMARKS.md").read_text()


def test_model_card_takes_the_heldout_result_of_its_own_model_only(tmp_path):
    from screening.bench_model import heldout_section

    full = "67a44c495ce123a1045e2efdea5e7ae2"
    path = tmp_path / "heldout.json"
    assert "Not measured" in heldout_section(str(path), full)
    res = {
        "model_hash": "m67a44c495ce123a1",
        "reference": "sevenn",
        "n_hosts": 12,
        "dg_mae_eV": 0.125,
        "dg_rmse_eV": 0.152,
        "coverage_2sigma": 1.0,
        "same_best_site": 0.33,
        "command": "screen bench heldout",
    }
    path.write_text(json.dumps(res))
    text = heldout_section(str(path), full)
    assert "ΔGH* MAE 0.125 eV" in text and "12 hosts" in text
    path.write_text(json.dumps({**res, "model_hash": "me17062ccb9197932"}))
    assert "another model" in heldout_section(str(path), full)
    path.write_text(json.dumps({**res, "model_hash": ""}))
    assert "another model" in heldout_section(str(path), full)
    # a model fine-tuned on DFT is not asked to match its SevenNet-0 teacher; its own result still shows
    dft = heldout_section(str(path), full, dft_trained=True)
    assert "fine-tuned on DFT" in dft and "rerun" not in dft
    path.write_text(json.dumps(res))
    assert "ΔGH* MAE 0.125 eV" in heldout_section(str(path), full, dft_trained=True)
    assert "fine-tuned on DFT" in heldout_section(str(tmp_path / "none.json"), full, dft_trained=True)


def test_explicit_hosts_seen_in_training_are_refused(tmp_path):
    from ase.build import molecule
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    frame = molecule("H2")
    frame.info["host"] = "Cu2@3Nb"
    frame.calc = SinglePointCalculator(frame, energy=-6.7, forces=[[0, 0, 0]] * 2)
    write(tmp_path / "train.extxyz", [frame])
    args = _args(tmp_path, "--hosts", "Ni2@3Nb,Cu2@3Nb", "--exclude", str(tmp_path / "train.extxyz"))
    with pytest.raises(InputError, match="Cu2@3Nb"):
        B.run(args, handle=handle_from_loader(morse_posterior))
    assert not (tmp_path / "w").exists()  # refused before any work


def test_model_card_calls_dft_training_hosts_trained_on():
    """A fine-tuned model's card must not count hosts whose GPAW labels it trained on as held out; the
    SevenNet-0 replay frames and the host-less H2 reference name no host."""
    from ase import Atoms

    from potentials.checkpoint import dft_hosts_of

    frames = [
        Atoms("H2", info={"reference": "gpaw"}),
        Atoms("C", info={"reference": "gpaw", "host": "Pt2@5Na"}),
        Atoms("C", info={"reference": "sevenn", "host": "Fe2@3Nd"}),
        Atoms("C", info={"engine": "gpaw", "host": "Ir2@4Nc"}),
        Atoms("C", info={"reference": "vasp", "host": "Co2@4Na"}),
    ]
    assert dft_hosts_of(frames) == {"Pt2@5Na", "Ir2@4Nc", "Co2@4Na"}
