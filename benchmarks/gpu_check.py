"""GPU check, run first on a GPU machine before any GPU training or benchmark (one minute).

1. the float64 tiny model gives the same energies, forces, stresses and variances on the GPU as on the CPU
   (a batch of periodic EMT cells and one slab of the screen);
2. a GPU training run writes CPU checkpoints that resume on the CPU;
3. the batched relaxation of ``screen run`` converges on the GPU and agrees with the CPU.

Exits non-zero at the first failure. Usage: ``python benchmarks/gpu_check.py [--device cuda]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from potentials import keys as K  # noqa: E402
from potentials.data import atoms_to_graph, collate_graphs  # noqa: E402
from potentials.testing import emt_dataset, tiny_train_configs  # noqa: E402


def _outputs(model, graphs, device):
    batch = collate_graphs(graphs, dtype=torch.float64, device=device)
    out = model(batch, compute_forces=True, compute_stress=True, create_graph=False)
    keys = (K.ENERGY, K.FORCES, K.STRESS, K.ENERGY_VAR, K.FORCES_COV)
    return {k: out[k].detach().cpu() for k in keys}


def check_same_outputs(device: torch.device) -> None:
    from potentials.model import build_model, preset
    from structures.host import build_host

    frames = emt_dataset(6, seed=3)
    model_cfg = replace(preset("tiny", dtype="float64"), elements=("H", "C", "N", "Fe", "Cu", "Au"))
    torch.manual_seed(0)
    model = build_model(model_cfg)
    slab = build_host("Fe", "4Na", supercell="4x4")
    graphs = [atoms_to_graph(a, model_cfg.elements, model_cfg.cutoff) for a in [*frames, slab]]
    cpu = _outputs(model, graphs, torch.device("cpu"))
    gpu = _outputs(model.to(device), graphs, device)
    for k in cpu:
        err = float((cpu[k] - gpu[k]).abs().max())
        scale = float(cpu[k].abs().max()) + 1e-12
        print(f"  {k:<14} max |cpu - gpu| = {err:.2e} (max |value| {scale:.3g})")
        assert err <= 1e-9 * max(scale, 1.0), f"{k} differs between cpu and {device}: {err}"


def check_train_resume(device: torch.device) -> None:
    from potentials import checkpoint
    from potentials.train import train

    frames = emt_dataset(24, seed=0)
    model_cfg, train_cfg = tiny_train_configs(epochs=2)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        best = train(frames[:20], frames[20:], model_cfg, train_cfg, tmp, progress=False, device=device)
        print(f"  2 epochs on {device}: {time.perf_counter() - t0:.1f} s")
        payload = checkpoint.load(Path(tmp) / "last.pt")
        assert all(v.device.type == "cpu" for v in payload["state_dict"].values())
        # the same data and settings resume on the cpu (the run is finished: nothing more to train)
        best2 = train(frames[:20], frames[20:], model_cfg, train_cfg, tmp, progress=False, device="cpu")
        assert best2 == best


def check_relax(device: torch.device) -> None:
    import cli

    with tempfile.TemporaryDirectory() as tmp:
        runs = {"test": str(device), "ref": "cpu"}
        for tag, dev in runs.items():
            t0 = time.perf_counter()
            rc = cli.main(
                ["run", "--metals", "Fe", "--motifs", "4Na", "--device", dev, "--db", f"{tmp}/{tag}.db"]
                + ["--no-progress", "--top", "1"]
            )
            assert rc == 0, f"screen run on {dev} exited {rc}"
            print(f"  screen run Fe2@4Na on {dev}: {time.perf_counter() - t0:.1f} s")
        from screening.store import load_results

        a, b = (np.asarray(sorted(load_results(f"{tmp}/{tag}.db")["dg"].dropna())) for tag in runs)
        print(f"  ΔGH* {device}: {a}, cpu: {b}")
        assert len(a) == len(b) == 1 and np.allclose(a, b, atol=0.02), "ΔGH* differs between devices"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            print("no CUDA device", file=sys.stderr)
            return 1
        print(f"device: {torch.cuda.get_device_name(device)}; torch {torch.__version__}")
    import e3nn

    print(f"e3nn {e3nn.__version__}")
    for name, fn in (
        ("same outputs", check_same_outputs),
        ("train + resume", check_train_resume),
        ("relax", check_relax),
    ):
        t0 = time.perf_counter()
        print(f"[{name}]", flush=True)
        fn(device)
        print(f"[{name}] ok ({time.perf_counter() - t0:.1f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
