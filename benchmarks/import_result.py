"""Put a benchmark JSON measured on another machine (a GPU session) into BENCHMARKS.md and
benchmarks/results/, keeping its own date, hardware and command.

``python benchmarks/import_result.py RESULT.json [--command "what was run"] [--note "one line"]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from structures.common import write_bench_payload  # noqa: E402


def table_for(payload: dict) -> str:
    kind = payload["name"].split("_")[0]
    if kind == "screen":
        from screening.bench_screen import _table

        return _table(payload)
    if kind == "potential":
        from potentials.bench_potential import table

        return table(payload)
    raise SystemExit(f"no table for benchmark {payload['name']!r}; known: screen_*, potential_*")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("json")
    p.add_argument("--command", help="the command as run (default: the JSON's)")
    p.add_argument("--note", default="", help="a line under the table")
    args = p.parse_args()
    payload = json.loads(Path(args.json).read_text())
    if args.command:
        payload["command"] = args.command
    md = table_for(payload) + (f"\n\n{args.note}" if args.note else "")
    print(write_bench_payload(payload, md, Path(__file__).resolve().parents[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
