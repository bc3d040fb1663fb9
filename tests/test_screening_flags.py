"""Flags raised on constructed bad cases (and not on good ones)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from screening.flags import (
    FLAG_NAMES,
    FlagConfig,
    dg_flags,
    metal_geometry,
    order,
    parse,
    structure_flags,
    to_booleans,
    to_string,
)
from structures.host import build_host
from structures.sites import add_h, h_sites


@pytest.fixture(scope="module")
def host():
    return build_host("Fe", "3Nb", supercell="4x4")


def _metals(atoms):
    idx = [int(i) for i in atoms.info["pocket"].split(",")]
    return idx[0], idx[1]


def test_pristine_host_and_state_raise_nothing(host):
    assert structure_flags(host, host, "converged", -100.0) == []
    state = add_h(host, h_sites(host)[0])
    assert structure_flags(state, state, "converged", -100.0) == []


def test_metal_pulled_off_the_sheet_is_unstable(host):
    m1, _ = _metals(host)
    pulled = host.copy()
    pulled.positions[m1, 2] += 3.0
    assert metal_geometry(pulled)["metal_height1"] > 2.5
    assert structure_flags(host, pulled, "converged", -100.0) == ["unstable_host"]
    below = host.copy()
    below.positions[m1, 2] -= 3.0
    assert "unstable_host" in structure_flags(host, below, "converged", -100.0)


def test_metal_pair_broken_apart_is_unstable(host):
    m1, m2 = _metals(host)
    apart = host.copy()
    apart.positions[m2, 0] += 2.0
    assert metal_geometry(apart)["mm_distance"] > 3.6
    assert structure_flags(host, apart, "converged", -100.0) == ["unstable_host"]
    # a looser bound accepts it
    assert structure_flags(host, apart, "converged", -100.0, FlagConfig(max_mm_distance=10.0)) == []


def test_h_migrated_and_desorbed(host):
    state = add_h(host, h_sites(host)[0])
    h = state.info["ads_index"]
    moved = state.copy()
    moved.positions[h, 0] += 1.5
    assert structure_flags(state, moved, "converged", -1.0) == ["h_migrated"]
    gone = state.copy()
    gone.positions[h, 2] += 4.0
    assert structure_flags(state, gone, "converged", -1.0) == ["h_migrated", "h_desorbed"]


def test_nonfinite_and_not_converged(host):
    assert structure_flags(host, host, "max_steps", -1.0) == ["not_converged"]
    assert structure_flags(host, host, "converged", math.nan) == ["nonfinite"]
    assert structure_flags(host, host, "nonfinite", math.nan) == ["not_converged", "nonfinite"]


def test_dg_flags():
    cfg = FlagConfig(max_sigma=0.15, sign_sigmas=2.0)
    assert dg_flags(-0.5, 0.05, cfg) == []
    assert dg_flags(-0.5, 0.2, cfg) == ["high_variance"]  # σ above the threshold
    assert dg_flags(0.08, 0.05, cfg) == ["high_variance"]  # |ΔG| < 2σ: the sign is in doubt
    assert dg_flags(math.nan, 0.05, cfg) == ["nonfinite"]
    assert dg_flags(0.1, math.inf, cfg) == ["nonfinite"]


def test_flag_strings_and_booleans():
    flags = ["nonfinite", "high_variance", "nonfinite"]
    assert order(flags) == ["high_variance", "nonfinite"]
    assert to_string(flags) == "high_variance,nonfinite"
    assert parse("high_variance,nonfinite") == ["high_variance", "nonfinite"] and parse("") == []
    b = to_booleans(flags)
    assert set(b) == {f"flag_{n}" for n in FLAG_NAMES}
    assert b["flag_high_variance"] and b["flag_nonfinite"] and not b["flag_h_desorbed"]
    with pytest.raises(ValueError):
        order(["made_up"])


def test_flag_counts_over_stored_strings():
    from screening.flags import counts

    stored = ["high_variance,aggregates", "", None, "aggregates", "h_migrated,aggregates"]
    assert (
        counts(stored) == {"h_migrated": 1, "aggregates": 3, "high_variance": 1} and counts(["", None]) == {}
    )
    assert list(counts(stored)) == ["high_variance", "h_migrated", "aggregates"]  # FLAG_NAMES order


def test_report_says_when_high_variance_singles_out_no_host():
    import pandas as pd

    from reports.html import flagged_text

    df = pd.DataFrame(
        {
            "dg": [0.05, -0.6, 0.9, np.nan],
            "dg_std": [0.30, 0.35, 0.41, np.nan],
            "flags": ["high_variance", "high_variance,aggregates", "high_variance", "nonfinite"],
        }
    )
    text = flagged_text(df, 4)
    assert text.startswith("4 (high_variance 3, nonfinite 1, aggregates 1); high_variance on every host")
    assert "the smallest σ(ΔGH*) is 0.30 eV" in text
    df.loc[2, "flags"] = ""  # one finite host not flagged: the flag separates, no note
    assert flagged_text(df, 3) == "3 (high_variance 2, nonfinite 1, aggregates 1)"
    assert flagged_text(df.assign(flags=""), 0) == "0"


def test_high_variance_note_only_when_the_flag_is_on_every_finite_host():
    from screening.flags import high_variance_note

    assert high_variance_note(2, [0.3, np.nan, 0.4]).startswith("high_variance on every host")
    assert "0.30 eV" in high_variance_note(2, [0.3, np.inf, 0.4])
    assert high_variance_note(1, [0.3, 0.4]) == "" and high_variance_note(0, []) == ""


def test_h_that_stretches_the_metal_pair_is_flagged(host):
    from screening.flags import pair_stretch, stretch_flags

    m1, m2 = _metals(host)
    state = add_h(host, h_sites(host)[0])
    assert pair_stretch(host, state) == pytest.approx(0.0, abs=1e-12)
    assert stretch_flags(pair_stretch(host, state)) == []
    stretched = state.copy()
    axis = stretched.positions[m2] - stretched.positions[m1]
    axis /= np.linalg.norm(axis)
    stretched.positions[m2] += 0.4 * axis  # 0.4 Å longer than the host's pair, below the 3.6 Å break-up
    assert pair_stretch(host, stretched) == pytest.approx(0.4, abs=1e-9)
    assert metal_geometry(stretched)["mm_distance"] < FlagConfig().max_mm_distance
    assert stretch_flags(pair_stretch(host, stretched)) == ["pair_stretched"]
    assert stretch_flags(pair_stretch(host, stretched), FlagConfig(max_mm_stretch=0.5)) == []
    # a shortened pair is not a stretch; no pocket gives nan and no flag
    assert stretch_flags(pair_stretch(stretched, host)) == []
    bare = host.copy()
    bare.info.pop("pocket")
    assert math.isnan(pair_stretch(bare, state)) and stretch_flags(math.nan) == []


def test_every_flag_has_a_meaning_for_the_report():
    from screening.flags import FLAG_HELP

    assert set(FLAG_HELP) == set(FLAG_NAMES) and all(FLAG_HELP.values())
