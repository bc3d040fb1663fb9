"""Exploration (session 15, docs/dft.md tenth measurement): can a Bayesian update of the last readout alone
carry the DFT correction of a SevenNet-0-trained network to hosts it never saw?

Features ΔΦ = Φ(host+H) − Φ(host) − ½Φ(H2), Φ = scale · Σ_atoms node_scalars (the input of the network's
last readout, the space of the last-layer Laplace). Target y = ΔE_H(DFT) − ΔE_H(network) on the DFT triples
of the training hosts (every pw500 host outside benchmarks/heldout_hosts.txt). Bayesian linear regression
y = ΔΦ·w + ε, w ~ N(0, 1/α), ε ~ N(0, s²), on a grid of (α, s²); leave-one-host-out MAE on the training
hosts and the MAE, mean σ and 2σ coverage on the held-out hosts' triples. Per host: DFT's lowest labelled
site against the lowest prediction over the same sites.

    python benchmarks/bll_dft.py runs/v04_dft_site.pt     # the v0.4 network (its anchoring is not used)
"""

import sys

import numpy as np
import torch

from potentials import keys as K
from potentials.bayes import load_posterior
from potentials.data import collate
from screening.bench_model import dft_triples
from structures.common import read_host_list

torch.set_num_threads(1)
model_path = sys.argv[1] if len(sys.argv) > 1 else "runs/v04_dft_site.pt"
post = load_posterior(model_path)
net = post.model
held = set(read_host_list("benchmarks/heldout_hosts.txt"))
triples = dft_triples("dft/labels.db", settings_hash="8105ed16eae5")
print(len(triples), "triples", model_path)


def feats(atoms3):
    batch = collate(list(atoms3), post.elements, post.cutoff, dtype=post.dtype, with_labels=False)
    out = net(batch, compute_forces=False)
    s = out[K.NODE_SCALARS].detach().double()
    g = torch.zeros(3, s.shape[1], dtype=torch.float64).index_add_(0, batch[K.BATCH], s)
    g = g * float(net.config.scale)
    e = out[K.ENERGY].detach().double().numpy()
    phi = g.numpy()
    return e[1] - e[0] - 0.5 * e[2], phi[1] - phi[0] - 0.5 * phi[2], phi[1] - phi[0]


rows = []
for t in triples:
    de, dphi, dphi_h = feats(t["atoms"])
    rows.append(
        dict(name=t["name"], host=t["host"], geom=t["geometry"], dft=t["dft_de"], model=de, dphi=dphi)
    )
train = [r for r in rows if r["host"] not in held]
test = [r for r in rows if r["host"] in held]
print(
    len(train),
    "train triples,",
    len({r["host"] for r in train}),
    "hosts;",
    len(test),
    "test triples,",
    len({r["host"] for r in test}),
    "hosts",
)


def fit(tr, alpha, s2):
    X = np.array([r["dphi"] for r in tr])
    y = np.array([r["dft"] - r["model"] for r in tr])
    A = X.T @ X / s2 + alpha * np.eye(X.shape[1])
    cov = np.linalg.inv(A)
    w = cov @ X.T @ y / s2
    return w, cov


def predict(w, cov, r):
    x = r["dphi"]
    return r["model"] + x @ w, float(np.sqrt(x @ cov @ x))


def host_mae(rs, pred):
    """per host: DFT lowest labelled site vs prediction at that same... (lowest predicted over the same sites)"""
    by = {}
    for r, p in zip(rs, pred):
        by.setdefault(r["host"], []).append((r["dft"], p))
    errs = [min(p for _, p in v) - min(d for d, _ in v) for v in by.values()]
    return float(np.mean(np.abs(errs))), len(errs)


def loho(tr, alpha, s2):
    err = []
    for h in sorted({r["host"] for r in tr}):
        w, cov = fit([r for r in tr if r["host"] != h], alpha, s2)
        for r in tr:
            if r["host"] == h:
                p, _ = predict(w, cov, r)
                err.append(p - r["dft"])
    return float(np.mean(np.abs(err)))


base = [r["model"] for r in test]
print(
    f"base: triple MAE {np.mean(np.abs(np.array(base) - [r['dft'] for r in test])):.3f}, "
    f"host MAE {host_mae(test, base)[0]:.3f} ({host_mae(test, base)[1]} hosts)"
)
off = np.mean([r["dft"] - r["model"] for r in train])
print(
    f"global offset {off:+.3f}: triple MAE {np.mean(np.abs(np.array(base) + off - [r['dft'] for r in test])):.3f}, "
    f"host MAE {host_mae(test, [b + off for b in base])[0]:.3f}"
)
for s2 in (0.01, 0.04, 0.1):
    for alpha in (0.1, 1.0, 10.0, 100.0, 1000.0):
        w, cov = fit(train, alpha, s2)
        pr = [predict(w, cov, r) for r in test]
        p = np.array([x[0] for x in pr])
        sd = np.array([x[1] for x in pr])
        err = p - np.array([r["dft"] for r in test])
        tot = np.sqrt(sd**2 + s2)
        cov2 = np.mean(np.abs(err) <= 2 * tot)
        print(
            f"s2 {s2:5.2f} alpha {alpha:7.1f}: LOHO(train) {loho(train, alpha, s2):.3f}  test triple MAE "
            f"{np.mean(np.abs(err)):.3f} host MAE {host_mae(test, p)[0]:.3f}  mean σ {np.mean(tot):.3f} 2σ cov {cov2:.2f}"
        )
