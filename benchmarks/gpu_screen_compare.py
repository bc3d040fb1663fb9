"""Import GPU session 22 (benchmarks/gpu_session22.sh) into BENCHMARKS.md: the full screen on the GPU against the
CPU screen of the same model, and the epoch time of the anchoring fine-tune on the GPU.

The GPU outputs (the device tool's $OUT, copied to benchmarks/results/gpu_session22/) hold the per-host results of
``screen run --metals all --motifs all --device cuda`` as CSV; the CPU store (runs/screen6/results.db) holds the
same model's screen on this machine. Per host: |ΔGH*|, |σ|, |E_f| and |E(host)| differences, the best site, the
aggregates flag, and the rank correlation. Energies in eV.

    python benchmarks/gpu_screen_compare.py benchmarks/results/gpu_session22 runs/screen6/results.db mf1f0d8beecbfac41
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from screening.store import load_results  # noqa: E402
from structures.common import write_bench_payload  # noqa: E402

COMMAND = (
    "bash benchmarks/gpu_session22.sh (SCREEN_TIMEOUT=330; step 1: screen run --metals all --motifs all "
    "--device cuda --batch-size 512); the anchor timings as benchmarks/results/gpu_session22/README.md says; "
    "python benchmarks/gpu_screen_compare.py benchmarks/results/gpu_session22 runs/screen6/results.db "
    "mf1f0d8beecbfac41"
)


def compare(gpu: pd.DataFrame, cpu: pd.DataFrame) -> dict:
    both = gpu.index.intersection(cpu.index)
    out: dict = {"hosts": int(len(both))}
    for col in ("dg", "dg_std", "e_form", "e_host", "e_host_h"):
        d = (gpu.loc[both, col].astype(float) - cpu.loc[both, col].astype(float)).abs().to_numpy()
        out[col] = {"mean_abs_diff": float(np.mean(d)), "max_abs_diff": float(np.max(d))}
    out["same_best_site"] = float((gpu.loc[both, "best_site"] == cpu.loc[both, "best_site"]).mean())
    out["same_aggregates_flag"] = float((gpu.loc[both, "aggregates"] == cpu.loc[both, "aggregates"]).mean())
    out["spearman_dg"] = float(spearmanr(gpu.loc[both, "dg"], cpu.loc[both, "dg"]).statistic)
    top = {
        k: set(df.loc[both].assign(a=df.loc[both, "dg"].abs()).nsmallest(20, "a").index)
        for k, df in (("gpu", gpu), ("cpu", cpu))
    }
    out["top20_overlap"] = len(top["gpu"] & top["cpu"])
    return out


def gpu_memory(path: Path) -> dict:
    """Peak memory (MiB) and mean utilisation (%) of ``nvidia-smi -l 1`` samples taken during the screen."""
    mem, util = [], []
    for line in path.read_text().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3:
            mem.append(float(parts[1].split()[0]))
            util.append(float(parts[2].split()[0]))
    return {"peak_mib": max(mem), "mean_util_percent": float(np.mean(util)), "samples": len(mem)}


def main(folder: str, cpu_db: str, model_hash: str) -> None:
    f = Path(folder)
    log = (f / "screen.log").read_text()
    m = re.search(r"(\d+) hosts, (\d+) structures .*?, ([\d.]+) s", log)
    wall = float(re.search(r"wall_s ([\d.]+)", log).group(1))
    outcome = re.search(r"relaxations by outcome: (.*)", log).group(1)
    gpu_name = (f / "gpu.txt").read_text().splitlines()
    gpu = pd.read_csv(f / "screen_hosts.csv").set_index("host")
    cpu = load_results(cpu_db, model_hash=model_hash).set_index("host")
    cmp = compare(gpu, cpu)
    anchor = dict(re.findall(r"epochs (\d+) rc 0 wall ([\d.]+)", (f / "anchor_times.txt").read_text()))
    e1, e6 = float(anchor["1"]), float(anchor["6"])
    per_epoch = (e6 - e1) / 5
    overhead = e1 - per_epoch  # start-up, Laplace fit and evaluation of one run
    t2 = (f / "anchor_times2.txt").read_text()
    conc4 = float(re.search(r"4 concurrent epochs-6 batch-4 wall ([\d.]+)", t2).group(1))
    b32 = float(re.search(r"epochs-6 batch-32 rc 0 wall ([\d.]+)", t2).group(1))
    per_epoch_b32 = (b32 - overhead) / 6
    result = {
        "name": "screen_full_cuda",
        "command": COMMAND,
        "date": "2026-11-28 04:39:41",
        "hardware": {
            "cpu": "16-core host",
            "threads": "16 (torch default)",
            "gpu": f"{gpu_name[0]} ({gpu_name[1]})",
        },
        "model_hash": model_hash,
        "hosts": int(m.group(1)),
        "structures": int(m.group(2)),
        "run_s": float(m.group(3)),
        "wall_s": wall,
        "relaxations": outcome,
        "gpu_memory": gpu_memory(f / "gpumem.csv"),
        "vs_cpu_store": cmp,
        "anchor_epoch_s": {
            "epochs_1_wall_s": e1,
            "epochs_6_wall_s": e6,
            "per_epoch_s": per_epoch,
            "four_concurrent_epochs_6_wall_s": conc4,
            "throughput_4_concurrent_vs_1": 4 * e6 / conc4,
            "batch_32_epochs_6_wall_s": b32,
            "per_epoch_batch_32_s": per_epoch_b32,
        },
    }
    c = cmp
    table = "\n".join(
        [
            "| quantity | value |",
            "|---|---|",
            f"| model | shipped default v0.5.1-dft (`{model_hash}`), GPU `{gpu_name[0].split(',')[0]}` |",
            f"| selection | {result['hosts']} hosts, {result['structures']} structures (every host and H* site) |",
            f"| wall time of the full screen | {wall / 60:.2f} min ({wall:.1f} s; {result['run_s']:.1f} s inside "
            "`screen run`, the rest is start-up and imports); target < 30 min |",
            f"| relaxations | {outcome} |",
            f"| GPU memory peak, mean utilisation | {result['gpu_memory']['peak_mib']:.0f} MiB, "
            f"{result['gpu_memory']['mean_util_percent']:.0f} % (nvidia-smi each second, start-up included) |",
            f"| ΔGH*, GPU vs CPU store | mean abs diff {c['dg']['mean_abs_diff'] * 1e3:.3f} meV, max "
            f"{c['dg']['max_abs_diff'] * 1e3:.2f} meV; Spearman {c['spearman_dg']:.7f} |",
            f"| σ(ΔGH*), GPU vs CPU | max abs diff {c['dg_std']['max_abs_diff'] * 1e3:.2f} meV |",
            f"| E_f, E(host), GPU vs CPU | max abs diff {c['e_form']['max_abs_diff'] * 1e3:.3f} meV, "
            f"{c['e_host']['max_abs_diff'] * 1e3:.3f} meV |",
            f"| same best H site, same `aggregates` flag | {c['same_best_site']:.0%} of {c['hosts']}, "
            f"{c['same_aggregates_flag']:.0%} |",
            f"| 20 hosts nearest thermoneutral, overlap | {c['top20_overlap']} of 20 |",
            f"| anchoring fine-tune (build-step recipe, batch 4, eager) | {per_epoch:.1f} s per epoch on the GPU "
            f"(`screen bench anchor --epochs 1` {e1:.0f} s, `--epochs 6` {e6:.0f} s); 300 epochs ≈ "
            f"{300 * per_epoch / 60:.0f} min |",
            f"| four such fine-tunings at once on the one GPU (`--epochs 6`, seeds 1–4) | {conc4:.0f} s wall against "
            f"{e6:.0f} s for one: {4 * e6 / conc4:.1f}x the throughput |",
            f"| the same at `--batch-size 32` (another recipe: 8x fewer steps) | `--epochs 6` {b32:.0f} s, so "
            f"≈ {per_epoch_b32:.1f} s per epoch; 300 epochs ≈ {300 * per_epoch_b32 / 60:.0f} min |",
        ]
    )
    note = (
        "\n\nOne NVIDIA H200 lent for 15 minutes (session 22; raw outputs in benchmarks/results/gpu_session22/). "
        "The whole screen of the shipped model, measured rather than extrapolated: every one of the 3,703 "
        "relaxations and the 460 ΔGH* rows with their Laplace σ (20 posterior samples per structure) in "
        f"{wall / 60:.1f} min. The CPU screen of the same model (runs/screen6) took about 34 min on one busy core "
        "of this machine (another run, so no ratio is claimed). GPU and CPU agree host by host to a few meV (the "
        "largest ΔGH* difference, 3.5 meV on Hf2@3Nc, is in its H* energy, well inside what a relaxation to fmax "
        "0.05 eV/Å leaves open), with the same best site, the same formation-energy flags and the same ranking. In the same session "
        "tests/test_graph_step.py passed on CUDA (10 passed; its CUDA test skips on every CPU, CI included) and "
        "benchmarks/gpu_check.py found CPU and GPU float64 outputs equal to 7e-13. The GPU is mostly idle during the "
        "screen (utilisation 10 % averaged over the run, start-up included), and a training step of these small "
        "models waits on kernel launches the same way (docs/gpu.md: 6.5 ms busy in a 96 ms step). So the "
        "anchoring fine-tune of a build step (batch 4 of 30-atom slabs) takes about as long on the GPU as on one "
        "CPU core (~45 min for 300 epochs). Four of them share the GPU at about three times the throughput of "
        "one, and a batch of 32 makes an epoch about four times shorter. Even so, one 300-epoch fine-tuning at "
        "batch 32 (~11 min with its Laplace fit) outlasts one 10-minute device command and takes most of the 15 "
        "minutes a session is lent, so a learning curve or a seed ensemble of the build-step recipe stays a job "
        "for a longer lease; and batch 32 is another recipe, to be validated first (on the CPU, against the "
        "held-out hosts' paired interval)."
    )
    write_bench_payload(result, table + note)
    print(table + note)


if __name__ == "__main__":
    main(*sys.argv[1:4])
