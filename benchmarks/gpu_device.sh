#!/usr/bin/env bash
# The device side of benchmarks/gpu_bundle.sh: installs the carried wheels beside the GPU image's own
# packages, points the embedded defaults at the carried MiniLM and reviews, and runs
# benchmarks/gpu_check.sh with them; its results go to $OUT, the folder the device tool brings back.
#
#   bash benchmarks/gpu_device.sh                         # the device run (carry [".dev"])
#   PY=/path/python SITE=/tmp/site-dry WHL="WHEELS" SCALE=0 OUT=/tmp/dry bash benchmarks/gpu_device.sh
#                                                         # a dry run on a CPU, WHEELS those its python lacks
set -u
cd "$(dirname "$0")/.."
PY=${PY:-python3}
SITE=${SITE:-/tmp/site}
[ -d .dev/whl ] || { echo "gpu_device: no .dev/whl: run benchmarks/gpu_bundle.sh first and carry .dev" >&2; exit 2; }
# the wheel and the tree's benchmarks and tests must be the same code: a stale bundle would mix two
[ "$(bash benchmarks/gpu_stamp.sh)" = "$(cat .dev/stamp 2>/dev/null)" ] ||
  { echo "gpu_device: .dev was built from other sources than this tree's: run benchmarks/gpu_bundle.sh again" >&2; exit 2; }
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" ${WHL:-.dev/whl/*.whl} || exit 1
cp -r .dev/fake/. "$SITE/"
export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH} LS_MINILM=$PWD/.dev/minilm
PY=$PY OUT=${OUT:?OUT: the folder for the results} exec bash benchmarks/gpu_check.sh
