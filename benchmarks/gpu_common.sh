# Sourced by the GPU session scripts: repository root as working folder, unbuffered Python, $OUT (what the
# device tool brings back; .gpu/out when run by hand) and `stamp NAME`, which prints the seconds since start.
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
export PYTHONUNBUFFERED=1
OUT=${OUT:-.gpu/out}
mkdir -p "$OUT"
t0=$(date +%s)
stamp() { echo "=== $1 at +$(($(date +%s) - t0)) s"; }
