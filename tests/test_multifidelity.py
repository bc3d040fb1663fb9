"""Multi-fidelity training (issue 10): pre-train on many cheap labels, fine-tune on a few expensive ones.

Toy two-fidelity problem: the high fidelity is ASE's EMT, the low fidelity a biased EMT (V0 x1.15, E0
+0.1 eV) on the same kind of Cu/Au cells. Fine-tuning the low-fidelity model on 6 high-fidelity frames must
beat both the low-fidelity model alone and a model trained from scratch on those 6 frames.
"""

from __future__ import annotations

import pytest
import torch

from potentials import checkpoint
from potentials.testing import emt_dataset, emt_low_fidelity, tiny_train_configs
from potentials.train import evaluate, train

torch.set_num_threads(1)


def _cfg(epochs: int, lr: float = 2e-2):
    return tiny_train_configs(epochs, lr)


def test_fine_tune_on_few_high_fidelity_labels_beats_both_baselines(tmp_path):
    hi_all = emt_dataset(46, seed=7, with_stress=False)
    lo = emt_low_fidelity(emt_dataset(40, seed=11, with_stress=False))
    hi_train, hi_valid, hi_test = hi_all[:6], hi_all[6:10], hi_all[10:]
    assert (
        abs(lo[0].get_potential_energy() - emt_low_fidelity([lo[0]], 1.0, 0.0)[0].get_potential_energy())
        > 0.05
    )

    m, t = _cfg(epochs=30)
    pre = train(lo[:34], lo[34:], m, t, tmp_path / "pre", progress=False)
    m, t = _cfg(epochs=40, lr=1e-2)
    tuned = train(hi_train, hi_valid, m, t, tmp_path / "ft", progress=False, init_from=pre)
    m, t = _cfg(epochs=45)
    scratch = train(hi_train, hi_valid, m, t, tmp_path / "scratch", progress=False)

    err = {
        name: evaluate(checkpoint.load_model(p)[0], hi_test)
        for name, p in (("pretrained", pre), ("fine-tuned", tuned), ("scratch", scratch))
    }
    f = {k: v["forces_mae"] for k, v in err.items()}
    e = {k: v["energy_per_atom_mae"] for k, v in err.items()}
    assert f["fine-tuned"] < 0.8 * f["pretrained"], f
    assert f["fine-tuned"] < 0.8 * f["scratch"], f
    assert e["fine-tuned"] < e["pretrained"], e


def _shifted(frames, shifts):
    """Copies of ``frames`` whose energies are shifted by per-element constants ``shifts`` (eV/atom)."""
    from ase.calculators.singlepoint import SinglePointCalculator

    out = []
    for a in frames:
        b = a.copy()
        e = a.get_potential_energy() + sum(shifts[s] for s in a.get_chemical_symbols())
        b.calc = SinglePointCalculator(b, energy=e, forces=a.get_forces())
        out.append(b)
    return out


def test_refit_e0s_removes_a_per_element_reference_shift_exactly(tmp_path):
    """Labels of a 'second code' = the model's own energies + per-element constants: after refit_e0s the
    model reproduces them to float64 precision, without any weight changing."""
    from potentials.train import refit_e0s

    frames = emt_dataset(8, seed=3, with_stress=False)
    m, t = _cfg(epochs=2)
    pre = train(frames[:6], frames[6:], m, t, tmp_path / "pre", progress=False)
    model, payload = checkpoint.load_model(pre)
    config = model.config
    own = evaluate(model, frames, return_predictions=True)["energy_pred"]
    relabelled = []
    from ase.calculators.singlepoint import SinglePointCalculator

    for a, e in zip(frames, own):
        b = a.copy()
        b.calc = SinglePointCalculator(b, energy=e, forces=a.get_forces())
        relabelled.append(b)
    shifts = {"Cu": -3.7, "Au": 1.25}
    target = _shifted(relabelled, shifts)
    weights = {k: v.clone() for k, v in model.state_dict().items() if k != "model.e0"}
    new_config = refit_e0s(model, config, target)
    after = evaluate(model, target, return_predictions=True)
    assert after["energy_mae"] < 1e-8, after["energy_mae"]
    for s, e_old, e_new in zip(config.elements, config.e0s, new_config.e0s):
        assert abs(e_new - e_old - shifts[s]) < 1e-8, (s, e_new - e_old)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())


def test_fine_tune_with_refit_e0s_and_frozen_layers(tmp_path):
    """--refit-e0s + --trainable readout through train(): only readout weights move, the E0s follow the
    new labels, and a name that matches nothing is a clear error."""
    from dataclasses import replace

    import pytest

    from structures.common import InputError

    frames = emt_dataset(12, seed=5, with_stress=False)
    m, t = _cfg(epochs=2)
    pre = train(frames[:8], frames[8:], m, t, tmp_path / "pre", progress=False)
    hi = _shifted(emt_low_fidelity(frames), {"Cu": 2.0, "Au": -1.0})
    t_ft = replace(_cfg(epochs=3)[1], refit_e0s=True, trainable=("readout",))
    tuned = train(hi[:8], hi[8:], m, t_ft, tmp_path / "ft", progress=False, init_from=pre)
    before = checkpoint.load(pre)
    after = checkpoint.load(tuned)
    moved = {k for k, v in after["state_dict"].items() if not torch.equal(v, before["state_dict"][k])}
    assert moved and all("readout" in k or k == "model.e0" for k in moved), sorted(moved)
    assert "model.e0" in moved
    assert after["config"]["e0s"] != before["config"]["e0s"]
    e_pre = evaluate(checkpoint.load_model(pre)[0], hi)["energy_per_atom_mae"]
    e_ft = evaluate(checkpoint.load_model(tuned)[0], hi)["energy_per_atom_mae"]
    assert e_pre > 0.5 and e_ft < 0.25 * e_pre, (e_pre, e_ft)
    with pytest.raises(InputError, match="matches no parameter"):
        train(hi[:8], hi[8:], m, replace(t_ft, trainable=("nonsense",)), tmp_path / "bad", init_from=pre)
    with pytest.raises(InputError, match="needs init_from"):
        train(hi[:8], hi[8:], m, replace(t_ft, trainable=()), tmp_path / "bad2", progress=False)


def test_replay_of_pretraining_forces_limits_forgetting(tmp_path):
    """Fine-tuning hard on 2 high-fidelity frames degrades the forces elsewhere; replaying low-fidelity
    frames with energy_weight 0 (forces only: their energies are on another reference) fits the same
    energies and keeps the forces on unseen structures closer to the truth."""
    from dataclasses import replace

    hi = emt_dataset(30, seed=7, with_stress=False)
    lo = emt_low_fidelity(emt_dataset(40, seed=11, with_stress=False), 1.05, 0.3)
    m, t = _cfg(epochs=30)
    pre = train(lo[:30], lo[30:], m, t, tmp_path / "pre", progress=False)
    m, t = tiny_train_configs(60, 1e-2, energy_weight=1000.0, force_weight=10.0)
    t = replace(t, refit_e0s=True, early_stopping_patience=10**6)
    hi_train, hi_test = hi[:2], hi[10:]
    plain = train(hi_train, hi_train, m, t, tmp_path / "ft", progress=False, init_from=pre)
    replay = []
    for a in lo[:12]:
        b = a.copy()
        b.calc, b.info["energy_weight"] = a.calc, 0.0
        replay.append(b)
    kept = train(hi_train + replay, hi_train, m, t, tmp_path / "rp", progress=False, init_from=pre)
    err = {
        name: (
            evaluate(checkpoint.load_model(p)[0], hi_test),
            evaluate(checkpoint.load_model(p)[0], hi_train),
        )
        for name, p in (("pre", pre), ("plain", plain), ("replay", kept))
    }
    f = {k: v[0]["forces_mae"] for k, v in err.items()}
    e_fit = {k: v[1]["energy_mae"] for k, v in err.items()}
    assert f["replay"] < 0.9 * f["plain"], f
    assert e_fit["replay"] < 0.1 * e_fit["pre"] and e_fit["plain"] < 0.1 * e_fit["pre"], e_fit


def test_train_command_replays_forces_but_never_their_energies(tmp_path, capsys):
    """`screen train --init-from --refit-e0s --replay`: replay frames whose energies sit 50 eV/atom away
    (another code's reference) change neither the E0 refit nor the energy fit; a bad --replay-n is refused."""
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    from cli import main

    hi = emt_dataset(14, seed=3, with_stress=False)
    lo = emt_low_fidelity(emt_dataset(12, seed=4, with_stress=False))
    m, t = _cfg(epochs=10)
    pre = train(lo[:10], lo[10:], m, t, tmp_path / "pre", progress=False)
    far = []
    for a in lo:
        b = a.copy()
        b.calc = SinglePointCalculator(
            b, energy=a.get_potential_energy() + 50.0 * len(a), forces=a.get_forces()
        )
        far.append(b)
    write(tmp_path / "hi.extxyz", hi[:10])
    write(tmp_path / "hi_valid.extxyz", hi[10:])
    write(tmp_path / "replay.extxyz", far)
    argv = ["train", "--data", str(tmp_path / "hi.extxyz"), "--valid", str(tmp_path / "hi_valid.extxyz"),
            "--preset", "tiny", "--init-from", str(pre), "--refit-e0s", "--epochs", "6", "--lr", "5e-3",
            "--quiet", "--float64"]  # fmt: skip
    assert (
        main(
            [
                *argv,
                "--out",
                str(tmp_path / "rp"),
                "--replay",
                str(tmp_path / "replay.extxyz"),
                "--replay-n",
                "8",
            ]
        )
        == 0
    )
    assert "8 frames of" in capsys.readouterr().out
    e_pre = evaluate(checkpoint.load_model(pre)[0], hi[10:])["energy_per_atom_mae"]
    e_rp = evaluate(checkpoint.load_model(tmp_path / "rp" / "best.pt")[0], hi[10:])["energy_per_atom_mae"]
    assert e_rp < e_pre < 5.0, (e_pre, e_rp)  # a replayed energy would have pulled it towards +50 eV/atom
    assert (
        main(
            [
                *argv,
                "--out",
                str(tmp_path / "bad"),
                "--replay",
                str(tmp_path / "replay.extxyz"),
                "--replay-n",
                "0",
            ]
        )
        == 2
    )
    assert "--replay-n 0" in capsys.readouterr().err
    bad_weight = ["--replay", str(tmp_path / "replay.extxyz"), "--replay-energies", "references"]
    assert main([*argv, "--out", str(tmp_path / "bad2"), *bad_weight, "--replay-energy-weight", "0"]) == 2
    assert "--replay-energy-weight 0.0 is not allowed; allowed: > 0" in capsys.readouterr().err
    assert not (tmp_path / "bad2" / "best.pt").exists()


def test_shift_replay_energies_moves_labels_by_the_e0_refit():
    """A replay graph's energy label moves by sum over its atoms of (new - old) E0 and trains with its
    shifted-energy weight; graphs without the mark keep label and weight."""
    from ase.build import bulk

    from potentials import keys as K
    from potentials.data import atoms_to_graph
    from potentials.train import shift_replay_energies

    frames = emt_dataset(2, seed=1, with_stress=False)
    ref = bulk("Au", "fcc", a=4.1, cubic=True)
    ref.info.update({K.ENERGY: -1.0, K.ENERGY_WEIGHT: 0.0, K.SHIFTED_ENERGY_WEIGHT: 0.5})
    ref.arrays[K.FORCES] = ref.positions * 0.0
    graphs = [atoms_to_graph(a, ("Au", "Cu"), 4.0) for a in [*frames, ref]]
    before = [float(g[K.ENERGY]) for g in graphs]
    assert shift_replay_energies(graphs, (1.0, 2.0), (1.5, -1.0)) == 1
    assert [float(g[K.ENERGY]) for g in graphs[:2]] == before[:2]
    assert [float(g[K.ENERGY_WEIGHT]) for g in graphs] == [1.0, 1.0, 0.5]
    assert abs(float(graphs[2][K.ENERGY]) - (before[2] + 4 * 0.5)) < 1e-12  # 4 Au atoms, +0.5 eV each


def test_replayed_reference_energies_follow_the_refit_reference(tmp_path):
    """Fine-tuning on a 'second code' (EMT + per-element constants) after pre-training on a biased EMT moves
    the E0s. Replayed energies of pure-Cu cells (stability references that no second-code label covers;
    their teacher puts them 0.3 eV/atom above the biased EMT) are learned on the new reference, moved by
    the refit, which itself ignores them; replaying forces alone cannot know them."""
    from dataclasses import replace

    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    from potentials import keys as K
    from potentials.data import replay_frames

    lo_all = emt_low_fidelity(emt_dataset(24, seed=4, with_stress=False))
    cells = []
    for k, a0 in enumerate((3.5, 3.55, 3.6, 3.65, 3.7, 3.75)):
        c = bulk("Cu", "fcc", a=a0, cubic=True)
        c.rattle(0.03, seed=k)
        c.calc = EMT()
        cells.append(c)
    refs = []
    for a in emt_low_fidelity(cells):
        b = a.copy()
        b.calc = SinglePointCalculator(
            b, energy=a.get_potential_energy() + 0.3 * len(a), forces=a.get_forces()
        )
        b.info["ref_kind"] = "bulk"
        refs.append(b)
    m, t = _cfg(epochs=20)
    pre = train(lo_all[:20], lo_all[20:], m, t, tmp_path / "pre", progress=False)
    old = dict(zip(checkpoint.load(pre)["elements"], checkpoint.load(pre)["config"]["e0s"]))
    shifts = {"Cu": 1.5, "Au": -0.7}
    hi = _shifted(emt_dataset(12, seed=9, with_stress=False), shifts)
    write(tmp_path / "replay.extxyz", lo_all[:20] + refs)
    t_ft = replace(_cfg(epochs=20, lr=1e-2)[1], refit_e0s=True)
    errors = {}
    for mode in ("none", "references"):
        replayed = replay_frames(tmp_path / "replay.extxyz", 10, 0, energies=mode)
        assert sum(K.SHIFTED_ENERGY_WEIGHT in a.info for a in replayed) == (6 if mode == "references" else 0)
        out = train(hi[:9] + replayed, hi[9:], m, t_ft, tmp_path / mode, progress=False, init_from=pre)
        model, _ = checkpoint.load_model(out)
        new = dict(zip(model.config.elements, model.config.e0s))
        assert abs(new["Cu"] - old["Cu"] - shifts["Cu"]) < 0.5, (new, old)  # the refit saw no replay energy
        pred = evaluate(model, refs, return_predictions=True)["energy_pred"]
        target = [a.get_potential_energy() + len(a) * (new["Cu"] - old["Cu"]) for a in refs]
        errors[mode] = float(sum(abs(p - q) for p, q in zip(pred, target)) / len(refs) / 4)  # eV/atom
    assert errors["none"] > 0.15 and errors["references"] < 0.25 * errors["none"], (
        errors
    )  # measured 0.28, 0.05


def test_laplace_fit_counts_replayed_energies(tmp_path):
    """The Laplace likelihood sees a replayed energy as training did: the energy σ of the replayed
    stability references shrinks when their energies are replayed (--replay-energies references), against
    the same fit with forces alone."""
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.io import write

    from potentials.bayes.laplace import LaplaceConfig, fit_laplace
    from potentials.data import collate, replay_frames

    frames = emt_dataset(10, seed=2, with_stress=False)
    cells = []
    for k, a0 in enumerate((3.55, 3.6, 3.65, 3.7)):
        c = bulk("Au", "fcc", a=a0 + 0.5, cubic=True)
        c.rattle(0.03, seed=k)
        c.calc = EMT()
        c.get_potential_energy()
        c.info["ref_kind"] = "bulk"
        cells.append(c)
    m, t = _cfg(epochs=4)
    pre = train(frames[:8] + cells, frames[8:], m, t, tmp_path / "pre", progress=False)
    write(tmp_path / "replay.extxyz", cells)
    cfg = LaplaceConfig(variant="last_layer", ggn="exact", n_samples=6, marglik_steps=0)
    sigma = {}
    for mode in ("none", "references"):
        replayed = replay_frames(tmp_path / "replay.extxyz", 4, 0, energies=mode)
        post = fit_laplace(
            frames[:8] + replayed, frames[8:], m, t, cfg, tmp_path / mode, init_from=pre, train=False
        )
        batch = collate(cells, post.elements, post.cutoff, dtype=torch.float64)
        sigma[mode] = float(post.predict(batch).energy_var_epistemic.sqrt().mean())
    assert sigma["references"] < 0.7 * sigma["none"], sigma


def test_laplace_refit_moves_replayed_energies_from_the_named_e0s_and_keeps_the_relaxation_hash(
    tmp_path, capsys
):
    """A Laplace fit without training (``screen train --epochs 0``) of a fine-tuned model sees replayed
    reference energies on the fine-tuned reference only when told the E0s they were moved from
    (``--replay-e0s-from``, the model the fine-tuning started from): its energy residuals are then those of
    the fine-tuning, not the E0 shift. It records the fine-tuned model's relaxation hash."""
    from dataclasses import replace

    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.io import write

    from cli import main
    from potentials.bayes import load_posterior
    from potentials.bayes.laplace import LaplaceConfig, fit_laplace
    from potentials.data import replay_frames

    lo = emt_low_fidelity(emt_dataset(14, seed=4, with_stress=False))
    cells = []
    for k, a0 in enumerate((3.55, 3.6, 3.65)):
        c = bulk("Cu", "fcc", a=a0, cubic=True)
        c.rattle(0.03, seed=k)
        c.calc = EMT()
        cells.append(c)
    refs = emt_low_fidelity(cells)
    for a in refs:
        a.info["ref_kind"] = "bulk"
    m, t = _cfg(epochs=10)
    pre = train(lo[:12] + refs, lo[12:], m, t, tmp_path / "pre", progress=False)
    shifts = {"Cu": 1.5, "Au": -0.7}
    hi = _shifted(emt_dataset(8, seed=9, with_stress=False), shifts)
    write(tmp_path / "replay.extxyz", lo[:2] + refs)
    replayed = replay_frames(tmp_path / "replay.extxyz", 1, 0, energies="references")
    t_ft = replace(_cfg(epochs=10, lr=1e-2)[1], refit_e0s=True)
    ft = train(hi[:6] + replayed, hi[6:], m, t_ft, tmp_path / "ft", progress=False, init_from=pre)
    cfg = LaplaceConfig(variant="last_layer", ggn="exact", n_samples=4, fit_marglik=False)
    var = {}
    for origin in (None, pre):
        post = fit_laplace(
            hi[:6] + replayed, None, m, t, cfg, tmp_path / "refit", init_from=ft, train=False,
            replay_e0s_from=origin,
        )  # fmt: skip
        var[origin is not None] = post.hyper["var_energy"]
        assert post.network_of == checkpoint.relaxation_hash(checkpoint.load(ft))
    assert var[True] < 0.1 * var[False], var  # without the shift, 1.5 eV/atom x 4 atoms per replayed cell
    # the command: the same refit, saved; the copy's relaxation hash is the fine-tuned model's
    write(tmp_path / "hi.extxyz", hi[:6])
    out = tmp_path / "cmd"
    argv = ["train", "--data", str(tmp_path / "hi.extxyz"), "--valid", str(tmp_path / "hi.extxyz"),
            "--init-from", str(ft), "--epochs", "0", "--method", "laplace", "--bayes-preset", "tiny",
            "--laplace-structures", "0", "--replay", str(tmp_path / "replay.extxyz"), "--replay-n", "1",
            "--replay-energies", "references", "--recalibration", "none", "--out", str(out), "--quiet"]  # fmt: skip
    assert main([*argv, "--replay-e0s-from", str(pre)]) == 0
    payload = checkpoint.load(out / "posterior.pt")
    assert checkpoint.relaxation_hash(payload) == checkpoint.relaxation_hash(checkpoint.load(ft))
    assert checkpoint.relaxation_hash(payload) != payload["hash"]
    assert load_posterior(out / "posterior.pt").hyper["n_structures"] == 10.0  # all: 6 + 1 + 3
    capsys.readouterr()
    bad = [str(tmp_path / "bad") if a == str(out) else a for a in argv]
    assert main([*bad, "--laplace-structures", "-1"]) == 2
    assert "--laplace-structures -1" in capsys.readouterr().err
    two = ["2" if a == "0" and bad[i - 1] == "--epochs" else a for i, a in enumerate(bad)]
    assert main([*two, "--replay-e0s-from", str(pre)]) == 2
    assert "allowed only with --epochs 0" in capsys.readouterr().err
    assert main([*bad, "--replay-e0s-from", str(tmp_path / "nope.pt")]) == 2
    assert "nope.pt" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_models_record_the_dft_hosts_they_were_trained_on(tmp_path, capsys):
    """Training provenance (``extra["dft_hosts"]``): a model trained on DFT-labelled frames records their
    hosts (validation frames included: they steer early stopping), a posterior fitted from it inherits them
    and adds its own, and an anchored copy keeps them and its parent's network hash; frames of other
    labellers (SevenNet-0, EMT) name no host."""
    from dataclasses import replace

    from potentials.bayes import load_posterior
    from potentials.bayes.fit import fit_posterior, method_config

    frames = emt_dataset(10, seed=3, with_stress=False)
    for k, a in enumerate(frames):
        a.info.update(host=f"Cu2@{k}Na", reference="gpaw" if k in (0, 8) else "sevenn")
    m, t = _cfg(epochs=2)
    best = train(frames[:8], frames[8:], m, t, tmp_path / "pre", progress=False)
    assert checkpoint.dft_hosts(checkpoint.load(best)) == {"Cu2@0Na", "Cu2@8Na"}
    sevenn_only = train(frames[1:8], frames[9:], m, t, tmp_path / "s7", progress=False)
    assert checkpoint.DFT_HOSTS not in checkpoint.load(sevenn_only)["extra"]

    more = emt_dataset(4, seed=5, with_stress=False)
    for k, a in enumerate(more):
        a.info.update(host=f"Au2@{k}Nb", reference="vasp" if k == 0 else "emt")
    cfg = replace(method_config("laplace", "tiny"), variant="last_layer")
    post, path = fit_posterior(
        "laplace", more, None, m, "tiny", tmp_path / "lap", config=cfg, init_from=best,
        laplace_only=True, recalibration="none",
    )  # fmt: skip
    payload = checkpoint.load(path)
    assert checkpoint.dft_hosts(payload) == {"Cu2@0Na", "Cu2@8Na", "Au2@0Nb"}

    loaded = load_posterior(path)
    assert loaded.dft_hosts == {"Cu2@0Na", "Cu2@8Na", "Au2@0Nb"}
    assert loaded.save(tmp_path / "resaved.pt") == payload["hash"]  # a load + save round trip loses nothing
    loaded.recal.dg_offset = 0.3
    loaded.recal.anchor = {"offset": 0.3, "sigma_add": 0.1, "hosts": ["Au2@0Nb", "Cu2@0Na"]}
    copy = tmp_path / "anchored.pt"
    digest = loaded.save(copy)
    anchored = checkpoint.load(copy)
    assert anchored["hash"] == digest != payload["hash"]
    assert checkpoint.dft_hosts(anchored) == checkpoint.dft_hosts(payload)
    assert checkpoint.network_hash(anchored) == checkpoint.network_hash(payload)
    # the command says what it was trained on
    from ase.io import write

    from cli import main

    write(tmp_path / "mixed.extxyz", frames[:8])
    capsys.readouterr()
    argv = ["train", "--data", str(tmp_path / "mixed.extxyz"), "--preset", "tiny", "--epochs", "1", "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "cmd")]) == 0
    assert "trained on DFT labels of 1 host(s): Cu2@0Na" in capsys.readouterr().out
    lap = [
        "--method",
        "laplace",
        "--bayes-preset",
        "tiny",
        "--recalibration",
        "none",
        "--out",
        str(tmp_path / "lp"),
    ]
    assert main([*argv, *lap]) == 0
    assert "trained on DFT labels of 1 host(s): Cu2@0Na" in capsys.readouterr().out


def test_replay_weight_scales_the_replayed_frames_loss(tmp_path):
    """--replay-weight w: every replayed frame carries the loss weight w, so its force residuals count w times
    a label's in the MSE force term; w <= 0 is refused with the option named."""
    import torch
    from ase.io import write

    from potentials import keys as K
    from potentials.data import collate, replay_frames
    from potentials.losses import LossConfig, compute_loss
    from structures.common import InputError

    frames = emt_low_fidelity(emt_dataset(6, seed=2, with_stress=False))
    write(tmp_path / "replay.extxyz", frames)
    replayed = replay_frames(tmp_path / "replay.extxyz", 3, 0, weight=0.25)
    assert len(replayed) == 3 and all(
        a.info[K.WEIGHT] == 0.25 and a.info[K.ENERGY_WEIGHT] == 0 for a in replayed
    )
    assert all(K.WEIGHT not in a.info for a in replay_frames(tmp_path / "replay.extxyz", 3, 0))
    with pytest.raises(InputError, match="--replay-weight 0.0 is not allowed"):
        replay_frames(tmp_path / "replay.extxyz", 3, 0, weight=0.0)
    label, rep = frames[0], replayed[0]
    batch = collate([label, rep], ["Cu", "Au"], 4.0, dtype=torch.float64)
    n0 = len(label)
    pred = {K.ENERGY: batch[K.ENERGY].clone(), K.FORCES: batch[K.FORCES].clone()}
    pred[K.FORCES][:n0] += 1.0  # unit residual on every label component, 2 on the replayed frame's
    pred[K.FORCES][n0:] += 2.0
    cfg = LossConfig(kind="mse", energy_weight=1.0, force_weight=1.0)
    _, parts = compute_loss(pred, batch, cfg)
    n1 = len(rep)
    expected = (n0 * 1.0 + 0.25 * n1 * 4.0) / (n0 + 0.25 * n1)
    assert sum(v for k, v in parts.items() if "force" in k) == pytest.approx(expected, rel=1e-9), parts
