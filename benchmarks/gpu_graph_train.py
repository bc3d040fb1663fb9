"""CUDA-graph training probe for the RACE ``large`` preset on acac (issue 3, docs/gpu.md).

Session 4 measured that an eager training step of the large preset keeps an H200 busy for 116 ms of
1,012 ms: the step is bound by kernel launches. This script captures the whole step (energy, forces by
autograd with create_graph, MSE loss, backward, AdamW, EMA) in one CUDA graph and replays it:

1. step time, eager vs captured, at each ``--batch-sizes``;
2. training for ``--minutes`` with the captured step at ``--batch-size`` (MSE throughout, AdamW with a
   tensor learning rate on a cosine over the time budget, EMA 0.99), then the acac test errors of the
   EMA weights through the ordinary ``potentials.train.evaluate``.

A graph needs static shapes: acac molecules all have 15 atoms in the same order, and the edges are all
ordered pairs of a molecule (210 per molecule). Pairs beyond the cutoff get a zero radial envelope, so the
energies and forces equal those of the cutoff neighbour list (tests/test_potentials_model.py checks that
on the CPU). Writes ``--out`` (JSON). Run on a GPU: ``python benchmarks/gpu_graph_train.py --out x.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from potentials import keys as K  # noqa: E402
from potentials.data import all_pairs_graph, atoms_to_graph, collate_graphs, read_dataset, read_e0s  # noqa: E402
from potentials.model import build_model, preset  # noqa: E402
from potentials.train import evaluate, prepare_config  # noqa: E402


def mse_loss(out: dict, batch: dict, force_weight: float) -> torch.Tensor:
    """Sync-free MSE: (energy per atom)^2 + w_F |F - F̂|^2 / 3, means over the batch."""
    e = (out[K.ENERGY] - batch[K.ENERGY]) / batch[K.NUM_ATOMS]
    f = out[K.FORCES] - batch[K.FORCES]
    return (e**2).mean().to(f.dtype) + force_weight * (f**2).mean()


class Stepper:
    """One optimisation step on a static batch, eager or replayed from a CUDA graph."""

    def __init__(self, model, batch, lr: float, force_weight: float, ema_decay: float):
        self.model, self.batch, self.fw = model, batch, force_weight
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.lr = torch.tensor(lr, device=batch[K.POSITIONS].device)
        cuda = self.lr.device.type == "cuda"
        self.opt = torch.optim.AdamW(
            self.params, lr=self.lr if cuda else lr, amsgrad=True, capturable=cuda, foreach=True
        )
        self.ema = [p.detach().clone() for p in self.params]
        self.ema_weight = 1.0 - ema_decay
        self.graph = None
        self.loss = None

    def _step(self) -> torch.Tensor:
        self.opt.zero_grad(set_to_none=False)
        out = self.model(self.batch)
        loss = mse_loss(out, self.batch, self.fw)
        loss.backward()
        self.opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(self.ema, self.params, self.ema_weight)
        return loss.detach()

    def eager(self) -> torch.Tensor:
        return self._step()

    def capture(self, warmup: int = 3) -> None:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(warmup):
                self._step()
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.loss = self._step()

    def load(self, other: dict) -> None:
        """Copy another batch of the same shapes into the static input tensors."""
        for key in (K.POSITIONS, K.ENERGY, K.FORCES):
            self.batch[key].copy_(other[key], non_blocking=True)

    def replay(self) -> torch.Tensor:
        self.graph.replay()
        return self.loss


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _time(fn, n: int) -> float:
    _sync()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    _sync()
    return (time.perf_counter() - t) / n


def table(payload: dict) -> str:
    """Markdown of an imported session: step times of each part, then the budget-limited training runs."""
    lines = [
        "| step of the `large` preset on acac | "
        + " | ".join(f"batch {b}" for b in payload["parts"][-1]["step_time"])
        + " |"
    ]
    lines.append("| --- |" + " --- |" * len(payload["parts"][-1]["step_time"]))
    for i, part in enumerate(payload["parts"], 1):
        st = part["step_time"]
        lines.append(
            f"| part {i}: eager (s) | " + " | ".join(f"{r['eager_s']:.3f}" for r in st.values()) + " |"
        )
        cells = [
            f"{r['graph_s']:.3f} ({r['speedup']:.1f}x)" if "graph_s" in r else "capture failed"
            for r in st.values()
        ]
        lines.append(f"| part {i}: CUDA graph (s) | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| run | batch | steps | epochs | train (min) | 300K E MAE (meV) | 300K F MAE (meV/Å) | 600K F MAE (meV/Å) |",
    ]
    lines.append("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for i, part in enumerate(payload["parts"], 1):
        t = part["train"]
        how = "CUDA graph" if t["graphed"] else "eager"
        lines.append(
            f"| part {i}: RACE {part['preset']}, {how}, MSE (w_F {t['force_weight']:g}) | {t['batch_size']} | {t['steps']} | "
            f"{t['epochs']} | {t['wall_s'] / 60:.1f} | {part['300K']['energy_mae']:.0f} | {part['300K']['forces_mae']:.0f} | "
            f"{part['600K']['forces_mae']:.0f} |"
        )
    return "\n".join(lines)


def import_session(paths: list[str], command: str, note: str) -> None:
    """Write BENCHMARKS.md section ``gpu_graph_cuda`` from the JSON of each part of a GPU session."""
    from structures.common import write_bench_payload

    parts = [json.loads(Path(p).read_text()) for p in paths]
    payload = {
        "name": "gpu_graph_cuda",
        "command": command,
        "date": time.strftime("%Y-%m-%d", time.localtime(Path(paths[-1]).stat().st_mtime)),
        "hardware": {
            "cpu": "16-core host",
            "threads": 16,
            "gpu": f"{parts[-1]['device']} (torch {parts[-1]['torch']})",
        },
        "parts": parts,
    }
    print(write_bench_payload(payload, table(payload) + (f"\n\n{note}" if note else ""), ROOT))


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "import":
        q = argparse.ArgumentParser(prog="gpu_graph_train.py import")
        q.add_argument("import_", metavar="import")
        q.add_argument("jsons", nargs="+")
        q.add_argument("--command", required=True)
        q.add_argument("--note", default="")
        a = q.parse_args()
        import_session(a.jsons, a.command, a.note)
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=str(ROOT / ".gpu/acac"))
    p.add_argument("--preset", default="large")
    p.add_argument("--batch-sizes", default="5,32")
    p.add_argument("--batch-size", type=int, default=5, help="training batch size")
    p.add_argument("--minutes", type=float, default=3.0, help="training budget with the captured step")
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--force-weight", type=float, default=100.0)
    p.add_argument("--device", default="cuda", help="cpu runs the eager path only (a smoke test)")
    p.add_argument("--n-test", type=int, default=0, help="test structures per set (0 = all)")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if not cuda:
        torch.set_num_threads(1)
    data = Path(args.data_dir)
    frames = read_dataset(data / "train_300K.xyz")
    e0s = read_e0s(data / "isolated_atoms.xyz")
    torch.manual_seed(0)
    perm = torch.randperm(len(frames)).tolist()
    valid = [frames[i] for i in perm[:50]]
    train = [frames[i] for i in perm[50:]]
    config = prepare_config(preset(args.preset), train, e0s=e0s)
    torch.manual_seed(0)
    model = build_model(config).to(device)
    model.train()
    graphs = [all_pairs_graph(atoms_to_graph(a, config.elements, config.cutoff)) for a in train]
    name = torch.cuda.get_device_name() if cuda else "cpu"
    result: dict = {"preset": args.preset, "device": name, "torch": torch.__version__}
    Path(args.out).write_text(json.dumps(result, indent=2))

    # 1. step time, eager vs graph
    timing = {}
    for bs in [int(b) for b in args.batch_sizes.split(",")]:
        batch = collate_graphs(graphs[:bs], device=device)
        stepper = Stepper(model, batch, args.lr, args.force_weight, 0.99)
        stepper.eager()
        row = {"eager_s": _time(stepper.eager, 5)}
        try:
            if not cuda:
                raise RuntimeError("no CUDA device")
            stepper.capture()
            row["graph_s"] = _time(stepper.replay, 20)
            row["speedup"] = row["eager_s"] / row["graph_s"]
        except Exception as exc:  # noqa: BLE001 - the probe records why capture failed
            import traceback

            row["graph_error"] = f"{type(exc).__name__}: {exc}"[:500]
            row["graph_traceback"] = traceback.format_exc()[-3000:]
        timing[bs] = row
        print(f"batch {bs}: {row}", flush=True)
        del stepper
        torch.cuda.empty_cache()
    result["step_time"] = timing
    Path(args.out).write_text(json.dumps(result, indent=2))
    graphed = "graph_s" in timing.get(args.batch_size, {})
    if cuda and not graphed:
        print("no captured step at the training batch size: training eagerly")

    # 2. training with the captured step, fresh weights
    torch.manual_seed(0)
    model = build_model(config).to(device)
    model.train()
    n_batches = len(graphs) // args.batch_size
    batches = [
        collate_graphs(graphs[i * args.batch_size : (i + 1) * args.batch_size], device=device)
        for i in range(n_batches)
    ]
    stepper = Stepper(model, {k: v.clone() for k, v in batches[0].items()}, args.lr, args.force_weight, 0.99)
    if graphed:
        stepper.capture()
    step = stepper.replay if graphed else stepper.eager
    budget, start, steps, epoch, curve = 60.0 * args.minutes, time.perf_counter(), 0, 0, []
    generator = torch.Generator().manual_seed(1)
    while time.perf_counter() - start < budget:
        losses = []
        for i in torch.randperm(n_batches, generator=generator).tolist():
            stepper.load(batches[i])
            losses.append(step().clone())
            steps += 1
        epoch += 1
        progress = min(1.0, (time.perf_counter() - start) / budget)
        lr = 1e-5 + 0.5 * (args.lr - 1e-5) * (1 + math.cos(math.pi * progress))
        stepper.lr.fill_(lr)  # the captured AdamW reads this tensor
        for group in stepper.opt.param_groups:
            if not torch.is_tensor(group["lr"]):
                group["lr"] = lr
        curve.append(
            {"epoch": epoch, "loss": float(torch.stack(losses).mean()), "s": time.perf_counter() - start}
        )
        if epoch % 10 == 0:
            print(f"epoch {epoch} loss {curve[-1]['loss']:.4g} at {curve[-1]['s']:.0f} s", flush=True)
    _sync()
    train_s = time.perf_counter() - start
    with torch.no_grad():
        for p_, e_ in zip(stepper.params, stepper.ema):
            p_.copy_(e_)
    model.eval()
    errors = {"valid": {k: 1e3 * v for k, v in evaluate(model, valid).items() if k != "n_structures"}}
    for name in ("300K", "600K"):
        test = read_dataset(data / f"test_MD_{name}.xyz")
        m = evaluate(model, test[: args.n_test] if args.n_test else test)
        errors[name] = {k: 1e3 * m[k] for k in ("energy_mae", "energy_rmse", "forces_mae", "forces_rmse")}
    result.update(
        train={"graphed": graphed, "batch_size": args.batch_size, "epochs": epoch, "steps": steps, "wall_s": train_s,
               "lr": args.lr, "force_weight": args.force_weight, "loss": "mse", "curve": curve},
        **errors,
    )  # fmt: skip
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps({k: errors[k] for k in ("300K", "600K")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
