"""Flags raised on constructed bad cases (and not on good ones)."""

from __future__ import annotations

import math

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
