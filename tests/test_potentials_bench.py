"""Pieces of ``screen bench potential`` that run quickly: the test cell, timing and the table."""

from __future__ import annotations

import numpy as np

from potentials.bench_potential import catalyst_cell, speed, table


def test_catalyst_cell():
    cell = catalyst_cell()
    assert len(cell) == 75 and cell.get_chemical_formula() == "C70Fe2N3" and cell.pbc.all()
    d = cell.get_all_distances(mic=True)[np.triu_indices(len(cell), 1)]
    assert d.min() > 1.2  # no overlapping atoms


def test_speed_and_table():
    result = speed("tiny", n_calls=2, with_sevennet=False)
    assert result["n_atoms"] == 75 and result["ours_latency_s"] > 0
    assert result["ours_atoms_per_s"] == 75 / result["ours_latency_s"]
    errors = {"energy_mae": 1.0, "energy_rmse": 2.0, "forces_mae": 3.0, "forces_rmse": 4.0}
    md = table(
        {
            "preset": "tiny",
            "300K": errors,
            "600K": errors,
            "epochs_run": 1,
            "train_wall_s": 6.0,
            "n_train": 10,
            "best_epoch": 0,
            "speed": result,
        }
    )
    assert "| RACE tiny (this run) | 2.00 | 4.00 | 2.00 | 4.00 |" in md
    assert "| NequIP (arXiv:2206.07697) | n/a | n/a | n/a | n/a |" in md
    assert "SevenNet" not in md
