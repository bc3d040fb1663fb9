"""``screen train --cuda-graphs``: static shapes, sync-free loss, portable optimizer state; the captured
step itself against the eager one on a CUDA device (skipped without one)."""

from __future__ import annotations

import json

import pytest
import torch

from potentials import checkpoint
from potentials import keys as K
from potentials.data import atoms_to_graph, collate_graphs
from potentials.graph_step import portable_optimizer_state, set_lr, static_graphs
from potentials.losses import LossConfig, compute_loss
from potentials.model import build_model
from potentials.testing import emt_clusters, emt_dataset, tiny_train_configs
from potentials.train import default_optimizer, prepare_config, train
from structures.common import InputError

torch.set_num_threads(1)
ELEMENTS = ("Al", "Cu")


@pytest.fixture(scope="module")
def clusters():
    return emt_clusters(12, seed=3)


def test_static_graphs_give_all_pairs_of_one_shape(clusters):
    graphs = static_graphs([atoms_to_graph(a, ELEMENTS, 3.0) for a in clusters])
    shapes = {tuple(g[K.EDGE_INDEX].shape) for g in graphs}
    assert shapes == {(2, 5 * 4)}


def test_static_graphs_refuse_periodic_and_mixed_sizes(clusters):
    periodic = atoms_to_graph(emt_dataset(1)[0], ("Cu", "Au"), 3.0)
    with pytest.raises(InputError, match="periodic"):
        static_graphs([periodic])
    small = clusters[0][:4]
    with pytest.raises(InputError, match="structure 1 has 4 atoms"):
        static_graphs([atoms_to_graph(a, ELEMENTS, 3.0) for a in (clusters[1], small)])
    swapped = clusters[2].copy()  # same size, other species order
    swapped.symbols[0] = "Al"
    with pytest.raises(InputError, match="species"):
        static_graphs([atoms_to_graph(a, ELEMENTS, 3.0) for a in (clusters[1], swapped)])


@pytest.mark.parametrize("kind", ["mse", "nll_e", "nll_jef"])
def test_loss_without_host_reads_equals_the_float_one(clusters, kind):
    model_cfg, _ = tiny_train_configs()
    config = prepare_config(model_cfg, clusters)
    torch.manual_seed(0)
    model = build_model(config)
    batch = collate_graphs(
        [atoms_to_graph(a, config.elements, config.cutoff) for a in clusters[:4]], dtype=torch.float64
    )
    batch[K.ENERGY_WEIGHT] = torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=torch.float64)
    cfg = LossConfig(kind=kind, mse_warmup_epochs=0)
    loss_f, parts_f = compute_loss(model(batch), batch, cfg, epoch=5)
    loss_t, parts_t = compute_loss(model(batch), batch, cfg, epoch=5, floats=False)
    assert torch.equal(loss_f, loss_t)
    assert all(torch.is_tensor(v) and float(v) == parts_f[k] for k, v in parts_t.items())


def test_energy_term_is_zero_with_a_gradient_when_no_energy_counts(clusters):
    model_cfg, _ = tiny_train_configs()
    config = prepare_config(model_cfg, clusters)
    model = build_model(config)
    batch = collate_graphs(
        [atoms_to_graph(a, config.elements, config.cutoff) for a in clusters[:3]], dtype=torch.float64
    )
    batch[K.ENERGY_WEIGHT] = torch.zeros(3, dtype=torch.float64)
    loss, parts = compute_loss(model(batch), batch, LossConfig(kind="mse", force_weight=0.0))
    assert parts["energy"] == 0.0
    loss.backward()  # a replay batch still has a graph to differentiate


def test_portable_optimizer_state_loads_into_an_eager_cpu_adamw(clusters):
    model_cfg, train_cfg = tiny_train_configs()
    model = build_model(prepare_config(model_cfg, clusters))
    opt = default_optimizer(model, train_cfg)
    for group in opt.param_groups:  # what a captured run saves
        group["lr"] = torch.tensor(0.003, dtype=torch.float64)
        group["capturable"] = True
    state = portable_optimizer_state(opt.state_dict())
    assert all(g["lr"] == 0.003 and not g["capturable"] for g in state["param_groups"])
    fresh = default_optimizer(model, train_cfg)
    fresh.load_state_dict(state)
    set_lr(fresh, 0.001)
    assert all(g["lr"] == 0.001 for g in fresh.param_groups)


def test_cuda_graphs_need_a_cuda_device(clusters, tmp_path):
    model_cfg, train_cfg = tiny_train_configs(epochs=1)
    with pytest.raises(InputError, match="needs a CUDA device"):
        train(clusters[:8], clusters[8:], model_cfg, train_cfg, tmp_path, progress=False, cuda_graphs=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="captured steps need a CUDA device")
@pytest.mark.parametrize("kind", ["mse", "nll_jef"])
def test_captured_training_matches_eager_training(clusters, tmp_path, kind):
    """Same seed, same batches: the captured run ends where the eager one does (float64), including the
    short last batch (eager inside a captured run), the warm-up-to-NLL recapture and the EMA."""
    model_cfg, train_cfg = tiny_train_configs(epochs=3, kind=kind, mse_warmup_epochs=1)
    train_atoms, valid_atoms = clusters[:10], clusters[10:]  # 10 = two batches of 4 and one of 2
    runs = {}
    for graphs in (False, True):
        out = tmp_path / f"graphs_{graphs}"
        train(
            train_atoms,
            valid_atoms,
            model_cfg,
            train_cfg,
            out,
            progress=False,
            device="cuda",
            cuda_graphs=graphs,
        )
        history = json.loads((out / "history.json").read_text())
        runs[graphs] = checkpoint.load(out / "last.pt")["state_dict"], history
    (_, h_eager), (_, h_graph) = runs[False], runs[True]
    # CUDA's scatter-adds round in no fixed order, and Adam divides by the running gradient magnitude, so
    # parameters with near-zero gradients pick up differences from rounding noise: the first epoch must
    # agree to 1e-6 (a warm-up step left in, a wrong learning rate or a missing EMA update shows at once),
    # later ones to 1e-4
    for a, b in zip(h_eager, h_graph, strict=True):
        rel = 1e-6 if a["epoch"] == 0 else 1e-4
        for key in ("train_loss", "valid_loss", "forces_mae"):
            assert b[key] == pytest.approx(a[key], rel=rel), (a["epoch"], key, a[key], b[key])
