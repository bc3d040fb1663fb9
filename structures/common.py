"""Small shared utilities: the one-line user error, atomic writes and benchmark records.

Lives in ``structures`` because it is the leftmost package; every other package may import it.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import tempfile
import time
from pathlib import Path
from typing import Any


class InputError(ValueError):
    """Bad user input. ``str(err)`` is one line naming the bad value and what is allowed.

    The CLI prints it as ``screen: error: <message>`` and exits with status 2.
    """


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same folder + fsync + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def hardware_summary() -> dict[str, Any]:
    """Where a benchmark ran: CPU model, cores, torch version and device."""
    info: dict[str, Any] = {"platform": platform.platform(), "cpu_count": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import torch

        info["torch"] = torch.__version__
        info["threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def read_host_list(spec: str, option: str = "--hosts") -> list[str]:
    """Host names (e.g. Pt2@4Nd) from a comma list or a file of whitespace-separated names (``#`` comments)."""
    path = Path(spec)
    if path.is_file():
        words = [w for line in path.read_text().splitlines() for w in line.split("#", 1)[0].split()]
    else:
        words = [w.strip() for w in spec.split(",") if w.strip()]
    bad = [w for w in words if "@" not in w]
    if bad or not words:
        raise InputError(
            f"{option} {spec!r}: {'no host' if not words else 'not a host name: ' + bad[0]}; "
            "allowed: names like Pt2@4Nd, comma-separated or in a file"
        )
    return words


def device_section(name: str, device: Any) -> str:
    """Benchmark section of a run on ``device``: ``name`` on the CPU, ``name_<type>`` elsewhere (e.g.
    screen_cuda), so GPU figures stand beside the CPU ones instead of replacing them."""
    kind = str(device).split(":")[0]
    return name if kind == "cpu" else f"{name}_{kind}"


def check_section_name(name: str, option: str = "--section") -> str:
    """A BENCHMARKS.md section / results file name: letters, digits, '_' and '-' (no path), else InputError."""
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise InputError(f"{option} {name!r} is not allowed; allowed: letters, digits, '_' and '-'")
    return name


def write_bench_result(
    name: str, result: dict[str, Any], command: str, table_md: str, root: str | os.PathLike = "."
) -> Path:
    """Store a benchmark: ``benchmarks/results/<name>.json`` and a section of ``BENCHMARKS.md``.

    The section is delimited by HTML comments so re-running a benchmark replaces its own section only.
    """
    payload = {
        "name": name,
        "command": command,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "hardware": hardware_summary(),
        **result,
    }
    return write_bench_payload(payload, table_md, root)


def write_bench_payload(payload: dict[str, Any], table_md: str, root: str | os.PathLike = ".") -> Path:
    """Write a finished benchmark payload (``name``, ``command``, ``date``, ``hardware`` + results) as
    ``benchmarks/results/<name>.json`` and its ``BENCHMARKS.md`` section; the date and hardware are the
    payload's, so a result measured on another machine (a GPU session) keeps them."""
    root = Path(root)
    name = payload["name"]
    out = root / "benchmarks" / "results" / f"{name}.json"
    atomic_write_text(out, json.dumps(payload, indent=2, default=float) + "\n")
    with _results_lock(out.parent):  # benchmarks running side by side each rewrite BENCHMARKS.md
        _write_section(root, out, payload, table_md)
    return out


@contextlib.contextmanager
def _results_lock(folder: Path):
    """An exclusive ``flock`` on ``folder`` (held by one process at a time; released when the block ends)."""
    import fcntl

    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _write_section(root: Path, out: Path, payload: dict[str, Any], table_md: str) -> None:
    """Replace (or append) the payload's section of ``root/BENCHMARKS.md``."""
    name = payload["name"]
    md_path = root / "BENCHMARKS.md"
    text = (
        md_path.read_text()
        if md_path.exists()
        else "# Benchmarks\n\nEvery figure below was produced by the command shown with it.\n"
    )
    begin, end = f"<!-- bench:{name}:begin -->", f"<!-- bench:{name}:end -->"
    hw = payload["hardware"]
    section = (
        f"{begin}\n## {name}\n\nCommand: `{payload['command']}`  \nDate: {payload['date']}  \n"
        f"Hardware: {hw.get('cpu', '?')}, {hw.get('threads', '?')} torch threads"
        f"{', GPU ' + hw['gpu'] if 'gpu' in hw else ''}  \nJSON: `{out.relative_to(root)}`\n\n{table_md.strip()}\n{end}"
    )
    if begin in text and end in text:
        pre, rest = text.split(begin, 1)
        _, post = rest.split(end, 1)
        text = pre + section + post
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    atomic_write_text(md_path, text)


def structure_hash(atoms) -> str:
    """16 hex characters from atomic numbers, positions (rounded to 1e-5 Å), cell (1e-5 Å) and pbc.

    The one structure identity used by the label store and the active-learning label cache.
    """
    import hashlib

    import numpy as np

    h = hashlib.sha1()
    h.update(np.asarray(atoms.numbers, dtype=np.int64).tobytes())
    h.update(np.round(np.asarray(atoms.positions, dtype=float), 5).astype(np.float64).tobytes() + b"|")
    h.update(np.round(np.asarray(atoms.cell.array, dtype=float), 5).astype(np.float64).tobytes())
    h.update(np.asarray(atoms.pbc, dtype=np.int8).tobytes())
    return h.hexdigest()[:16]


def register_subcommands(sub, table: dict[str, tuple[str, str]], run_key: str, missing_key: str) -> None:
    """One argparse sub-parser per ``name: (module, help)`` of ``table``: the module's ``add_arguments``
    fills it and its ``run`` is stored under ``run_key``; a module that is missing from this build is
    recorded under ``missing_key`` (the command then says so) instead of breaking ``--help``."""
    import importlib

    for name, (module, help_text) in table.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            p.set_defaults(**{missing_key: module})
            continue
        mod.add_arguments(p)
        p.set_defaults(**{run_key: mod.run})
