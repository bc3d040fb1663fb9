"""Time GPAW SCF iterations of one label-store structure with the pw500 labelling settings.

    python benchmarks/gpaw_fft_timing.py LOG.txt [MAXITER] [ROW_ID]

Run it once per GPAW build, side by side (e.g. ``PYTHONPATH=/path/to/fftw/build``), and compare the
per-iteration times in the logs; it stops after MAXITER iterations (default 5) without converging.
"""

from __future__ import annotations

import sys
import time

import ase.db
import gpaw
import gpaw.fftw

from screening.labelling import _gpaw_attempts, _gpaw_make, get_preset


def main() -> None:
    log = sys.argv[1]
    maxiter = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    row_id = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    print("gpaw", gpaw.__file__, "fftw", gpaw.fftw.have_fftw())
    atoms = ase.db.connect("dft/labels.db").get(id=row_id).toatoms()
    s = get_preset("pw500")
    atoms.calc = _gpaw_make(atoms, s, _gpaw_attempts(s)[0], txt=log).new(maxiter=maxiter)
    t = time.perf_counter()
    try:
        atoms.get_potential_energy()
    except Exception as exc:  # the SCF stops unconverged after maxiter: expected
        print("stopped:", type(exc).__name__)
    print(f"wall {time.perf_counter() - t:.1f} s; per-iteration times in {log}")


if __name__ == "__main__":
    main()
