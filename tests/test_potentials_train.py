"""The training loop on a tiny EMT data set: learning, determinism, kill + resume, fine-tuning, CLI."""

from __future__ import annotations

import json

import pytest
import torch
from ase.io import write

import cli
from potentials import checkpoint
from potentials.testing import emt_dataset, tiny_train_configs
from potentials.train import evaluate, train
from structures.common import InputError

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def data():
    frames = emt_dataset(20, seed=0)
    return frames[:16], frames[16:]


def _cfgs(epochs=4, lr=2e-2, **loss):
    return tiny_train_configs(epochs, lr, **loss)


def _state(path):
    return checkpoint.load(path)["state_dict"]


def test_loss_decreases_and_model_improves(data, tmp_path):
    train_atoms, valid_atoms = data
    model_cfg, train_cfg = _cfgs(epochs=12)
    best = train(train_atoms, valid_atoms, model_cfg, train_cfg, tmp_path, progress=False)
    history = json.loads((tmp_path / "history.json").read_text())
    assert len(history) == 12
    assert history[-1]["train_loss"] < 0.3 * history[0]["train_loss"]
    assert min(h["valid_loss"] for h in history) < 0.3 * history[0]["valid_loss"]
    model, payload = checkpoint.load_model(best)
    assert payload["config"]["elements"] == ["Cu", "Au"]  # ordered by atomic number
    metrics = evaluate(model, valid_atoms)
    assert metrics["forces_mae"] < 0.5 * history[0]["forces_mae"]
    assert set(metrics) >= {"energy_mae", "energy_rmse", "forces_mae", "forces_rmse", "energy_per_atom_mae"}


class _Kill(Exception):
    pass


def test_kill_and_resume_reproduces_uninterrupted_run(data, tmp_path):
    train_atoms, valid_atoms = data
    model_cfg, train_cfg = _cfgs(epochs=4, kind="nll_jef", mse_warmup_epochs=1)
    full = train(train_atoms, valid_atoms, model_cfg, train_cfg, tmp_path / "full", progress=False)

    def kill_after_two(epoch, model):
        if epoch == 1:
            raise _Kill

    with pytest.raises(_Kill):
        train(
            train_atoms,
            valid_atoms,
            model_cfg,
            train_cfg,
            tmp_path / "cut",
            progress=False,
            on_epoch_end=kill_after_two,
        )
    seen = []
    resumed = train(
        train_atoms,
        valid_atoms,
        model_cfg,
        train_cfg,
        tmp_path / "cut",
        progress=False,
        on_epoch_end=lambda epoch, model: seen.append(epoch),
    )
    assert seen == [1, 2, 3]  # the killed epoch is redone, finished ones are not
    for a, b in ((full, resumed), (full.with_name("last.pt"), resumed.with_name("last.pt"))):
        sa, sb = _state(a), _state(b)
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    # same settings in a folder holding another run: refuse instead of mixing runs
    other_model, other_train = _cfgs(epochs=5)
    with pytest.raises(InputError, match="other settings"):
        train(train_atoms, valid_atoms, other_model, other_train, tmp_path / "cut", progress=False)


def test_custom_optimizer_and_early_stop_hook(data, tmp_path):
    train_atoms, valid_atoms = data
    model_cfg, train_cfg = _cfgs(epochs=10)
    made = []

    def sgd(model):
        made.append(model)
        return torch.optim.SGD(model.parameters(), lr=1e-3)

    train(
        train_atoms,
        valid_atoms,
        model_cfg,
        train_cfg,
        tmp_path,
        progress=False,
        optimizer_factory=sgd,
        on_epoch_end=lambda epoch, model: epoch >= 2,
    )
    history = json.loads((tmp_path / "history.json").read_text())
    assert len(made) == 1 and len(history) == 3


def test_fine_tune_and_cli(data, tmp_path):
    train_atoms, valid_atoms = data
    write(tmp_path / "train.xyz", train_atoms, format="extxyz")
    write(tmp_path / "valid.xyz", valid_atoms, format="extxyz")

    def screen_train(out, *extra, data="train.xyz"):
        return cli.main(
            [
                "train",
                "--data",
                str(tmp_path / data),
                "--valid",
                str(tmp_path / "valid.xyz"),
                "--preset",
                "tiny",
                "--out",
                str(tmp_path / out),
                "--float64",
                "--quiet",
                *extra,
            ]
        )

    assert screen_train("run", "--epochs", "2", "--loss", "mse") == 0
    base = checkpoint.load(tmp_path / "run" / "best.pt")
    assert screen_train("ft", "--epochs", "1", "--init-from", str(tmp_path / "run" / "best.pt")) == 0
    tuned = checkpoint.load(tmp_path / "ft" / "best.pt")
    assert tuned["config"]["e0s"] == base["config"]["e0s"]  # fine-tuning keeps E0s and normalisation
    assert tuned["hash"] != base["hash"]
    # fine-tune + post-hoc Laplace in one command; the repulsion prior follows --repulsion
    extra = ["--epochs", "1", "--init-from", str(tmp_path / "run" / "best.pt"), "--method", "laplace"]
    assert screen_train("ftl", *extra, "--bayes-preset", "tiny", "--repulsion", "none") == 0
    lap = checkpoint.load(tmp_path / "ftl" / "map" / "best.pt")
    assert lap["config"]["e0s"] == base["config"]["e0s"] and lap["config"]["repulsion"] == "none"
    assert (tmp_path / "ftl" / "posterior.pt").exists()
    # --epochs 0: the Laplace posterior of the given point model itself, no fine-tuning
    extra = ["--epochs", "0", "--init-from", str(tmp_path / "run" / "best.pt"), "--method", "laplace"]
    assert screen_train("lap0", *extra, "--bayes-preset", "tiny") == 0
    assert not (tmp_path / "lap0" / "map").exists()
    post = checkpoint.load(tmp_path / "lap0" / "posterior.pt")
    for name, value in base["state_dict"].items():
        assert torch.equal(post["state_dict"][name].to(value.dtype), value), name
    assert screen_train("bad", "--epochs", "0") == 2  # only with --method laplace --init-from
    if not torch.cuda.is_available():
        assert screen_train("bad", "--device", "cuda") == 2
    assert screen_train("bad", "--init-from", str(tmp_path / "run" / "best.pt"), "--method", "swag") == 2
    assert screen_train("bad", "--max-force", "-1") == 2
    assert screen_train("bad", "--beta-nll", "1.5") == 2
    assert screen_train("bad", data="missing.xyz") == 2
    assert screen_train("bad", "--energy-key", "REF_E") == 2
    assert not (tmp_path / "bad").exists()  # nothing half-done


def test_max_force_cap_leaves_out_only_frames_above_it(data, tmp_path):
    import numpy as np

    from potentials.cmd_train import _cap_forces
    from potentials.data import read_dataset

    train_atoms, _ = data
    write(tmp_path / "frames.extxyz", train_atoms, format="extxyz")
    frames = read_dataset(str(tmp_path / "frames.extxyz"))
    fmax = [float(np.abs(a.arrays["forces"]).max()) for a in frames]
    cut = float(np.median(fmax))
    keep, n_out = _cap_forces(frames, cut)
    assert n_out == sum(f > cut for f in fmax) > 0 and len(keep) + n_out == len(frames)
    assert all(np.abs(a.arrays["forces"]).max() <= cut for a in keep)


def test_cosine_schedule_follows_epochs_or_the_time_budget(data):
    from dataclasses import replace
    from math import cos, pi

    from potentials.train import _cosine_lr

    _, cfg = _cfgs(epochs=10, lr=1e-2)
    cfg = replace(cfg, min_lr=1e-4)
    assert _cosine_lr(1e-2, cfg, 0, 0.0) == pytest.approx(1e-2)
    assert _cosine_lr(1e-2, cfg, 5, 0.0) == pytest.approx(1e-4 + 0.5 * (1e-2 - 1e-4))
    assert _cosine_lr(1e-2, cfg, 10, 0.0) == pytest.approx(1e-4)
    budget = replace(cfg, max_minutes=1.0)  # 60 s: 45 s elapsed outruns 1 epoch of 10
    assert _cosine_lr(1e-2, budget, 1, 45.0) == pytest.approx(
        1e-4 + 0.5 * (1e-2 - 1e-4) * (1 + cos(0.75 * pi))
    )
    assert _cosine_lr(1e-2, budget, 1, 600.0) == pytest.approx(1e-4)  # past the budget: the floor


def test_cosine_learning_rates_in_the_history(data, tmp_path):
    from math import cos, pi

    train_atoms, valid_atoms = data
    model_cfg, train_cfg = _cfgs(epochs=4, lr=2e-2)
    train(train_atoms, valid_atoms, model_cfg, train_cfg, tmp_path, progress=False)
    lrs = [h["lr"] for h in json.loads((tmp_path / "history.json").read_text())]
    lo = train_cfg.min_lr
    expected = [lo + 0.5 * (2e-2 - lo) * (1 + cos(pi * (e + 1) / 4)) for e in range(4)]
    assert lrs == pytest.approx(expected)


def test_resume_check_ignores_last_bit_differences_of_fitted_floats():
    """E0s re-fitted by least squares differ in the last bits with the BLAS thread count: a resumed run must
    still match, while a real change of settings must not, and the error names what changed."""
    import json
    from dataclasses import replace

    from potentials.model import preset
    from potentials.train import TrainConfig, _first_difference, _settings_key

    cfg = preset("small")
    t = TrainConfig()

    def diff(x, y):
        return _first_difference(json.loads(x), json.loads(y))

    a = _settings_key(cfg, replace(t, lr=1e-3), 10, 2)
    assert diff(a, _settings_key(cfg, replace(t, lr=1e-3 * (1 + 1e-12)), 10, 2)) == ""
    assert "train.lr" in diff(a, _settings_key(cfg, replace(t, lr=1.1e-3), 10, 2))
    assert "n.0: 10 != 11" in diff(a, _settings_key(cfg, replace(t, lr=1e-3), 11, 2))
