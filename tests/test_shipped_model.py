"""The checkpoint shipped in the package: loadable, covering every metal of the screen, and honest about its
DFT training hosts (README's held-out figures rely on none of them being a held-out host), with a model card
that describes this very file."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def shipped():
    from potentials.checkpoint import load
    from screening.pipeline import default_model_path

    path = default_model_path()
    if not path.exists():
        pytest.skip(f"no shipped model at {path}")
    return load(path)


def test_shipped_model_covers_every_metal_of_the_screen(shipped):
    from structures.metals import METALS

    assert set(METALS) | {"H", "C", "N"} <= set(shipped["elements"])
    assert shipped["method"] == "laplace"


def test_shipped_model_was_never_trained_on_a_held_out_host(shipped):
    from potentials.checkpoint import dft_hosts
    from structures.common import read_host_list

    trained = set(dft_hosts(shipped))
    held = set(read_host_list(str(ROOT / "benchmarks" / "heldout_hosts.txt")))
    assert trained, "the shipped model records no DFT training hosts (extra dft_hosts)"
    assert len(held) == 24
    assert not trained & held, f"trained on held-out host(s) {sorted(trained & held)}"


def test_model_card_describes_the_shipped_file(shipped):
    card = (ROOT / "potentials" / "models" / "MODEL_CARD.md").read_text()
    assert f"Hash `{shipped['hash'][:16]}`" in card, (
        "MODEL_CARD.md is not the card of default.pt: rerun screen bench model"
    )
