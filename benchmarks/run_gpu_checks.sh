#!/usr/bin/env bash
# The GPU checks of issue 16 in one command: the CUDA-only tests, then benchmarks/bench_gpu.py.
# Usage (from the repository root): benchmarks/run_gpu_checks.sh [output file]
# Everything printed also goes to the output file (default gpu_checks.txt), and the benchmark's
# figures to benchmarks/results/bench_gpu-<time>.json (commit it, then python docs/make_performance.py);
# the exit status is that of the tests (the benchmark measures, it does not pass or fail).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-gpu_checks.txt}"
PY="${PYTHON:-.venv/bin/python}"  # PYTHON=/path/to/python picks another interpreter
[ -x "$PY" ] || PY=python3
{
  echo "== $(date -u) on $(hostname)"
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda available:', torch.cuda.is_available())"
  echo "== CUDA-only tests (pytest -m cuda)"
  "$PY" -m pytest -m cuda -q -p no:cacheprovider tests
  status=$?
  echo "== benchmarks/bench_gpu.py"
  PYTHONPATH=. "$PY" benchmarks/bench_gpu.py
  echo "== tests exit status $status"
  exit $status
} 2>&1 | tee "$OUT"
exit "${PIPESTATUS[0]}"
