#!/usr/bin/env bash
# Builds .dev/, what one device run of benchmarks/gpu_check.sh carries (the GPU machine has no network):
# the gpu-kit's bundle (the wheels its image lacks, lora-search as a wheel, the embedded MiniLM in fp16,
# the fine-food reviews, shims that point the embedded defaults at those files) and bitsandbytes for
# the 4-bit phases. The image's torch is 2.11+cu130, so the bitsandbytes wheel keeps its CPU and
# CUDA 13.0 libraries alone: whole (43 MB) it would take the carry over its 64 MiB.
#
#   echo /.dev/ >> .git/info/exclude       # once per checkout: .dev stays out of git
#   bash benchmarks/gpu_bundle.sh          # here, after `make test` built .venv (about 10 s)
#
# then the device tool's run, carry [".dev"], timeout_s 540:  bash benchmarks/gpu_device.sh
# Environment: KIT, the gpu-kit folder (default ../shared/gpu-kit); PY, the project's python
# (default .venv/bin/python); BITSANDBYTES, the version to carry (default: the one PY has).
set -euo pipefail
cd "$(dirname "$0")/.."
KIT=${KIT:-../shared/gpu-kit}
PY=${PY:-.venv/bin/python}
LIMIT=$((64 * 1024 * 1024))  # the device tool's limit on what travels: working tree plus carried paths

git check-ignore -q .dev || { echo "gpu_bundle: .dev is not ignored by git: echo /.dev/ >> .git/info/exclude" >&2; exit 2; }
[ -x "$PY" ] || { echo "gpu_bundle: no $PY: run 'make test' once first" >&2; exit 2; }
{ PY=$PY bash "$KIT/make-bundle.sh" 2>&1 >/dev/null; } | { grep -v "^WARNING: Location" || true; }  # pip's notes on absent local indexes
# the working tree travels too: its benchmarks/gpu_check.sh replaces the kit's own phases and copy
rm -rf .dev/proj .dev/gpu_check.sh .dev/dump.py

BITSANDBYTES=${BITSANDBYTES:-$("$PY" -c "import importlib.metadata as m; print(m.version('bitsandbytes'))")}
rm -rf .dev/bitsandbytes && mkdir -p .dev/bitsandbytes
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_24_x86_64 -d .dev/bitsandbytes "bitsandbytes==$BITSANDBYTES" 2>&1 | { grep -v "^WARNING: Location" || true; }
"$PY" - .dev/bitsandbytes .dev/whl <<'PY'
import pathlib, re, sys, zipfile

source, target = (pathlib.Path(arg) for arg in sys.argv[1:])
(wheel,) = source.glob("bitsandbytes-*.whl")
other_devices = re.compile(r"libbitsandbytes_(cuda(?!130\.)|rocm|xpu)")  # not the CPU's, not CUDA 13.0's
with zipfile.ZipFile(wheel) as whole, zipfile.ZipFile(target / wheel.name, "w", zipfile.ZIP_DEFLATED) as trimmed:
    for item in whole.infolist():
        if not other_devices.search(item.filename):
            trimmed.writestr(item, whole.read(item))
PY
rm -rf .dev/bitsandbytes

# the sources the wheel was built from, which gpu_device.sh checks the tree it runs in against
bash benchmarks/gpu_stamp.sh >.dev/stamp

tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
carried=$(du -sb .dev | cut -f1)
echo "gpu_bundle: .dev $((carried / 1048576)) MiB + working tree $((tree / 1048576)) MiB of the 64 MiB a device run takes"
ls .dev/whl
if ((tree + carried > LIMIT)); then
  echo "gpu_bundle: over the device tool's 64 MiB: leave something out" >&2
  exit 1
fi
