#!/usr/bin/env bash
# GPU session 9 (one H100 through the workplace's device tool): `screen train --cuda-graphs` (issue 3).
#   1. tests/test_graph_step.py on CUDA: the captured run ends where the eager run does (float64, MSE and
#      NLL_JEF with the warm-up-to-NLL recapture);
#   2. `screen train --preset large` on acac train_300K, eager for one epoch, then captured for
#      GRAPH_MINUTES; epoch times from history.json (elapsed_s);
#   3. the captured run's best.pt on the first N_TEST structures of test_MD_300K and test_MD_600K.
# Inputs in .gpu/ (git-ignored, carried): acac/ (copy of ../shared/data/botnet/acac), whl/ (ase, e3nn 0.6,
# vesin-torch for Python 3.12). Outputs in $OUT: tests.log, eager.log, graph.log, *_history.json,
# graph_test.json.
source "$(dirname "$0")/gpu_common.sh"
stamp install
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
stamp tests
timeout "${TEST_TIMEOUT:-150}" python3 -m pytest -q -p no:cacheprovider tests/test_graph_step.py 2>&1 | tail -15 | tee "$OUT/tests.log"
D=.gpu/acac
common="--data $D/train_300K.xyz --e0s $D/isolated_atoms.xyz --preset large --device cuda --quiet"
stamp eager
timeout "${EAGER_TIMEOUT:-170}" python3 cli.py train $common --epochs 1 --out .gpu/run_eager 2>&1 | tail -4 | tee "$OUT/eager.log"
cp .gpu/run_eager/history.json "$OUT/eager_history.json"
stamp graph
timeout "${GRAPH_TIMEOUT:-300}" python3 cli.py train $common --cuda-graphs --max-minutes "${GRAPH_MINUTES:-3.5}" \
  --out .gpu/run_graph 2>&1 | tail -4 | tee "$OUT/graph.log"
cp .gpu/run_graph/history.json "$OUT/graph_history.json"
stamp test-errors
timeout "${EVAL_TIMEOUT:-90}" python3 - "$D" "${N_TEST:-300}" "$OUT/graph_test.json" <<'PY'
import json, sys
from potentials.checkpoint import load_model
from potentials.data import read_dataset
from potentials.train import evaluate
data, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
model, payload = load_model(".gpu/run_graph/best.pt")
model = model.to("cuda")
res = {"n_test": n, "best_epoch": payload["extra"].get("best_epoch")}
for t in ("300K", "600K"):
    m = evaluate(model, read_dataset(f"{data}/test_MD_{t}.xyz")[:n])
    res[t] = {k: 1e3 * v for k, v in m.items() if k != "n_structures"}
json.dump(res, open(out, "w"), indent=1)
print(json.dumps(res))
PY
stamp done
