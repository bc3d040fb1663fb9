"""The `screen` command: light start-up, every command wired, constants mirrored without heavy imports."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import cli


def test_help_imports_no_heavy_module():
    code = (
        "import sys, cli; cli.build_parser(); "
        "heavy = [m for m in ('torch', 'e3nn', 'ase', 'pymatgen', 'matplotlib', 'pandas') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == ""


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_command_is_wired(name):
    module, _ = cli.COMMANDS[name]
    mod = importlib.import_module(module)
    assert callable(mod.add_arguments) and callable(mod.run)
    r = subprocess.run([sys.executable, "-m", "cli", name, "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "usage: screen" in r.stdout


def test_every_benchmark_is_wired():
    from screening.cmd_bench import BENCHES

    for module, _ in BENCHES.values():
        mod = importlib.import_module(module)
        assert callable(mod.add_arguments) and callable(mod.run)


def test_train_command_mirrors_bayes_constants():
    from potentials import cmd_train
    from potentials.bayes import fit

    assert cmd_train.METHODS == fit.METHODS
    assert cmd_train.BAYES_PRESETS == fit.PRESET_NAMES
    assert cmd_train.RECALIBRATIONS == fit.RECALIBRATIONS


def test_version_and_no_command():
    r = subprocess.run([sys.executable, "-m", "cli", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == f"screen {cli.__version__}"
    r = subprocess.run([sys.executable, "-m", "cli"], capture_output=True, text=True)
    assert r.returncode == 0 and "COMMAND" in r.stdout


def test_sigterm_stops_a_command_like_an_interrupt(monkeypatch, capsys):
    """SIGTERM (a scheduler's time limit) becomes the Ctrl-C path: one line, exit status 143, and the
    process's own SIGTERM handler is back afterwards."""
    import os
    import signal
    import time

    import structures.cmd_motifs as cmd
    from cli import main

    def run(args):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)  # interrupted by the handler long before this ends
        return 0

    monkeypatch.setattr(cmd, "run", run)
    before = signal.getsignal(signal.SIGTERM)
    t0 = time.perf_counter()
    assert main(["motifs"]) == 143
    assert time.perf_counter() - t0 < 10
    assert "screen motifs: terminated (SIGTERM); finished work is saved" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) == before
