"""The 23 transition metals of the screen and their initial magnetic moments."""

from __future__ import annotations

from .common import InputError

#: 3d, 4d and 5d metals screened by default, in catalogue order.
METALS: tuple[str, ...] = (
    "Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu",
    "Zr", "Nb", "Mo", "Ru", "Rh", "Pd", "Ag",
    "Hf", "Ta", "W", "Re", "Os", "Ir", "Pt", "Au",
)  # fmt: skip

#: Initial magnetic moment (μB per metal atom) for spin-polarised starts: a high-ish spin guess
#: from the d-count of an isolated M(II)-like centre, reduced for 4d/5d metals whose wider d bands
#: rarely hold large moments. The DFT engines retry with a low-spin start when SCF fails.
INITIAL_MAGMOM: dict[str, float] = {
    "Ti": 2.0, "V": 3.0, "Cr": 4.0, "Mn": 4.0, "Fe": 3.0, "Co": 2.0, "Ni": 1.0, "Cu": 1.0,
    "Zr": 2.0, "Nb": 2.0, "Mo": 3.0, "Ru": 2.0, "Rh": 1.0, "Pd": 0.5, "Ag": 0.5,
    "Hf": 1.5, "Ta": 2.0, "W": 2.5, "Re": 2.0, "Os": 1.5, "Ir": 1.0, "Pt": 0.5, "Au": 0.5,
}  # fmt: skip


def resolve_metals(spec: str | list[str] | tuple[str, ...]) -> list[str]:
    """``"all"`` or a comma-separated list of symbols -> validated list (order as given, no duplicates).

    Raises InputError naming the bad symbol and listing the allowed ones.
    """
    if isinstance(spec, str):
        if spec.strip().lower() == "all":
            return list(METALS)
        items = [s.strip() for s in spec.split(",") if s.strip()]
    else:
        items = [str(s).strip() for s in spec]
    if not items:
        raise InputError(
            f"empty metal selection {spec!r}; allowed: all or a comma list of {', '.join(METALS)}"
        )
    out: list[str] = []
    for item in items:
        sym = item[:1].upper() + item[1:].lower()
        if sym not in METALS:
            raise InputError(f"unknown metal {item!r}; allowed: all or any of {', '.join(METALS)}")
        if sym not in out:
            out.append(sym)
    return out
