"""Where a training step of a RACE preset spends its time (forward, forces, backward; top operators).

``python benchmarks/gpu_profile.py --device cuda --preset large --data acac.xyz --batch 5``. Prints
milliseconds per phase (mean of ``--steps`` after 3 warm-ups, synchronised) and the torch profiler's top
operators by device time. A planning tool for GPU sessions, not a benchmark with a target.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from potentials.data import collate, read_dataset  # noqa: E402
from potentials.losses import LossConfig, compute_loss  # noqa: E402
from potentials.model import build_model, preset  # noqa: E402
from potentials.train import _elements_of  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--preset", default="large")
    p.add_argument("--data", required=True)
    p.add_argument("--batch", type=int, default=5)
    p.add_argument("--steps", type=int, default=5)
    args = p.parse_args()
    dev = torch.device(args.device)
    frames = read_dataset(args.data)[: args.batch]
    cfg = preset(args.preset)
    cfg = replace(cfg, elements=_elements_of([frames]), e0s=(0.0,) * len(_elements_of([frames])))
    cfg = replace(cfg, avg_num_neighbors=20.0).validate()
    model = build_model(cfg).to(dev)
    n_params = sum(q.numel() for q in model.parameters())
    batch = collate(frames, cfg.elements, cfg.cutoff, device=dev)
    loss_cfg = LossConfig(kind="nll_jef", mse_warmup_epochs=0)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def step(phases):
        t0 = time.perf_counter()
        out = model(batch, compute_forces=False, create_graph=False)
        sync()
        t1 = time.perf_counter()
        out = model(batch, compute_forces=True, create_graph=True)
        sync()
        t2 = time.perf_counter()
        loss, _ = compute_loss(out, batch, loss_cfg, 0)
        loss.backward()
        sync()
        t3 = time.perf_counter()
        model.zero_grad(set_to_none=True)
        for k, v in zip(("energy only", "energy+forces", "loss backward"), (t1 - t0, t2 - t1, t3 - t2)):
            phases[k] = phases.get(k, 0.0) + v

    for _ in range(3):
        step({})
    phases: dict = {}
    for _ in range(args.steps):
        step(phases)
    n_atoms = int(batch["num_atoms"].sum()) if "num_atoms" in batch else -1
    print(f"{args.preset} on {dev}: {n_params} parameters, batch {args.batch} ({n_atoms} atoms)")
    for k, v in phases.items():
        print(f"  {k:<15} {1e3 * v / args.steps:9.1f} ms")
    acts = [torch.profiler.ProfilerActivity.CPU]
    if dev.type == "cuda":
        acts.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=acts) as prof:
        step({})
    key = "cuda_time_total" if dev.type == "cuda" else "cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=15, max_name_column_width=50))
    return 0


if __name__ == "__main__":
    sys.exit(main())
