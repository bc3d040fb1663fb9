"""Same-budget MACE baseline on acac (issue 3): train a MACE model with ``mace-torch`` for the wall time
that RACE got in ``screen bench potential``, then test it on test_MD_300K and test_MD_600K.

mace-torch pins e3nn 0.4.4 while this package needs e3nn 0.6, so MACE lives in its own environment and
is never a dependency: ``--mace-python`` is that environment's interpreter, e.g. made with

    python3.11 -m venv /work/mace_env
    /work/mace_env/bin/pip install torch==2.13.0 && /work/mace_env/bin/pip install mace-torch==0.3.16

MACE has no wall-time limit, so the training process is stopped when the budget is spent; MACE keeps the
checkpoint of its best validation epoch, and a restart with ``--max_num_epochs`` at that epoch writes the
model without training further. The budget counts from the process start (data loading included).

Writes ``benchmarks/results/potential_mace[_cuda].json`` and its BENCHMARKS.md section, beside the RACE
figures of the same device (``potential`` or ``potential_cuda``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

EVAL = r"""
import json, sys
import numpy as np
from ase.io import read
from mace.calculators import MACECalculator
model, device, out = sys.argv[1], sys.argv[2], sys.argv[3]
calc = MACECalculator(model_paths=model, device=device, default_dtype="float64")
result = {}
for name, path in zip(("300K", "600K"), sys.argv[4:6]):
    de, df = [], []
    for atoms in read(path, ":"):
        e_ref, f_ref = atoms.info.get("energy", None), atoms.arrays.get("forces", None)
        if e_ref is None:  # ase >= 3.23 moves energy/forces keys into a SinglePointCalculator
            e_ref, f_ref = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = calc
        de.append(atoms.get_potential_energy() - e_ref)
        df.append((atoms.get_forces() - f_ref).ravel())
    de, df = np.array(de), np.concatenate(df)
    result[name] = {"energy_mae": 1e3 * np.abs(de).mean(), "energy_rmse": 1e3 * np.sqrt((de**2).mean()),
                    "forces_mae": 1e3 * np.abs(df).mean(), "forces_rmse": 1e3 * np.sqrt((df**2).mean()),
                    "n_structures": len(de)}
json.dump(result, open(out, "w"), indent=2)
"""


def _e0s(data: Path) -> dict[int, float]:
    from ase.io import read

    out = {}
    for atoms in read(data / "isolated_atoms.xyz", ":"):
        energy = atoms.info.get("energy")
        if energy is None:
            energy = atoms.get_potential_energy()
        out[int(atoms.numbers[0])] = float(energy)
    return out


def _train_command(args, data: Path, e0s: dict, max_epochs: int, restart: bool) -> list[str]:
    cmd = [
        args.mace_python, "-m", "mace.cli.run_train",
        "--name", "acac", "--train_file", str(data / "train_300K.xyz"), "--valid_fraction", "0.1",
        "--E0s", json.dumps(e0s).replace('"', ""), "--energy_key", "energy", "--forces_key", "forces",
        "--model", "MACE", "--hidden_irreps", args.hidden_irreps, "--r_max", str(args.r_max),
        "--num_interactions", "2", "--correlation", "3", "--max_L", str(args.max_l),
        "--batch_size", str(args.batch_size), "--lr", str(args.lr), "--ema", "--ema_decay", "0.99",
        "--amsgrad", "--max_num_epochs", str(max_epochs), "--eval_interval", "1", "--patience", "100000",
        "--device", args.device, "--default_dtype", "float32", "--seed", str(args.seed),
        "--work_dir", str(args.work_dir),
    ]  # fmt: skip
    return cmd + (["--restart_latest"] if restart else [])


def _best_epoch(work: Path) -> int | None:
    epochs = [
        int(m.group(1))
        for p in (work / "checkpoints").glob("*_epoch-*.pt")
        if (m := re.search(r"epoch-(\d+)", p.name))
    ]
    return max(epochs) if epochs else None


def _epochs_run(work: Path) -> int:
    log = "\n".join(p.read_text() for p in (work / "logs").glob("*.log") if "debug" not in p.name)
    done = [int(m) for m in re.findall(r"INFO: Epoch (\d+):", log)]
    return max(done) + 1 if done else 0


def _section(device: str) -> str:
    return "potential_mace" + ("" if device == "cpu" else f"_{device.split(':')[0]}")


def _race_rows(args) -> list[tuple[str, dict]]:
    """RACE results to show beside MACE: ``--race-json`` files (bench potential or gpu_graph_train JSON)."""
    default = ROOT / "benchmarks" / "results" / (_section(args.device).replace("_mace", "") + ".json")
    rows = []
    for path in map(Path, args.race_json or [default]):
        if not path.exists():
            continue
        race = json.loads(path.read_text())
        wall = race["train_wall_s"] if "train_wall_s" in race else race["train"]["wall_s"]
        loss = race.get("train_config", {}).get("loss", {})
        how = (
            f", loss {loss['kind']} after {loss['mse_warmup_epochs']} MSE epochs, w_F {loss['force_weight']:g}"
            if loss
            else ""
        )
        epochs = race.get("epochs_run", race.get("train", {}).get("epochs", "?"))
        rows.append(
            (f"RACE {race['preset']} ({path.name}: {epochs} epochs in {wall / 60:.1f} min{how})", race)
        )
    return rows


def table(result: dict, race_rows: list[tuple[str, dict]]) -> str:
    """Markdown: MACE's acac test errors (meV, meV/Å) beside the RACE runs given."""
    rows = [
        (
            f"MACE, mace-torch {result['mace_version']} ({result['epochs_run']} epochs in {result['wall_s'] / 60:.1f} min)",
            result,
        )
    ]
    md = [
        "| model | 300K E MAE (meV) | 300K F MAE (meV/Å) | 600K E MAE (meV) | 600K F MAE (meV/Å) | 300K F RMSE | 600K F RMSE |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in rows + race_rows:
        vals = [
            r["300K"]["energy_mae"],
            r["300K"]["forces_mae"],
            r["600K"]["energy_mae"],
            r["600K"]["forces_mae"],
        ]
        vals += [r["300K"]["forces_rmse"], r["600K"]["forces_rmse"]]
        md.append(f"| {name} | " + " | ".join(f"{v:.1f}" for v in vals) + " |")
    st = result["settings"]
    md += [
        "",
        f"MACE ({st['hidden_irreps']}, L={st['max_l']}, 2 interactions, correlation 3, r_max {st['r_max']} Å, batch "
        f"{st['batch_size']}, lr {st['lr']}, EMA 0.99, AMSGrad, float32) trained {result['epochs_run']} epochs in "
        f"{result['wall_s'] / 60:.1f} min of wall time on {result['device']} ({result['threads']} thread(s)), best "
        f"validation epoch {result['best_epoch']}. mace-torch lives in its own environment (it pins e3nn 0.4.4); it "
        "is a benchmark baseline, never a dependency.",
    ]
    return "\n".join(md)


def rebuild(args) -> int:
    """Rewrite the section from the stored MACE JSON with the RACE rows of ``--race-json`` (no training)."""
    from structures.common import write_bench_payload

    payload = json.loads((ROOT / "benchmarks" / "results" / f"{_section(args.device)}.json").read_text())
    note = f"\n\n{args.note}" if args.note else ""
    print(write_bench_payload(payload, table(payload, _race_rows(args)) + note, ROOT))
    return 0


def main() -> int:
    from structures.common import write_bench_result

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mace-python", default="/work/mace_env/bin/python")
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared/data/botnet/acac"))
    p.add_argument("--work-dir", type=Path, default=ROOT / "runs/mace_acac")
    p.add_argument("--minutes", type=float, default=None, help="wall-time budget (RACE's training time)")
    p.add_argument("--table-only", action="store_true", help="rebuild the section from the stored JSON")
    p.add_argument("--note", default="", help="a paragraph under the table (with --table-only)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--hidden-irreps", default="64x0e + 64x1o")
    p.add_argument("--max-l", type=int, default=1)
    p.add_argument("--r-max", type=float, default=5.0)
    p.add_argument("--batch-size", type=int, default=5)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--race-json",
        type=Path,
        nargs="+",
        default=None,
        help="RACE results to show beside (default: potential[_cuda].json)",
    )
    args = p.parse_args()
    if args.table_only:
        return rebuild(args)
    if args.minutes is None:
        p.error("--minutes is required to train")
    data = Path(args.data_dir)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    env.pop("PYTHONPATH", None)  # never this package's e3nn 0.6: MACE needs its own 0.4.4
    e0s = _e0s(data)
    log = open(args.work_dir / "train_stdout.log", "a")

    start = time.time()
    proc = subprocess.Popen(_train_command(args, data, e0s, 100000, False), stdout=log, stderr=log, env=env)
    try:
        proc.wait(timeout=60 * args.minutes)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    wall = time.time() - start
    best = _best_epoch(args.work_dir)
    if best is None:
        raise SystemExit(
            f"MACE saved no checkpoint in {args.minutes} min; see {args.work_dir}/train_stdout.log"
        )
    epochs = _epochs_run(args.work_dir)
    # restart at the best checkpoint with max_num_epochs equal to its epoch: no training, writes the model
    subprocess.run(_train_command(args, data, e0s, best, True), stdout=log, stderr=log, env=env, check=True)
    model = args.work_dir / "acac.model"
    out = args.work_dir / "test_errors.json"
    tests = [str(data / f"test_MD_{t}.xyz") for t in ("300K", "600K")]
    subprocess.run(
        [args.mace_python, "-c", EVAL, str(model), args.device, str(out), *tests], env=env, check=True
    )
    errors = json.loads(out.read_text())
    version = subprocess.run(
        [args.mace_python, "-c", "import mace; print(mace.__version__)"], capture_output=True, text=True
    ).stdout.strip()

    result = {
        "mace_version": version,
        "device": args.device,
        "threads": args.threads,
        "budget_min": args.minutes,
        "wall_s": wall,
        "epochs_run": epochs,
        "best_epoch": best,
        "settings": {
            k: getattr(args, k) for k in ("hidden_irreps", "max_l", "r_max", "batch_size", "lr", "seed")
        },
        **errors,
    }
    md = table(result, _race_rows(args))
    command = "python benchmarks/mace_acac.py " + " ".join(sys.argv[1:])
    path = write_bench_result(_section(args.device), result, command, md, root=ROOT)
    print(md)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
