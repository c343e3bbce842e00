#!/usr/bin/env bash
# The whole GPU check list in one go (memory contract of every shipped config, throughput, cold start), within
# about 8 minutes, on a CUDA machine holding this working tree and nothing of the project installed:
#
#   benchmarks/gpu_suite.sh                      # installs what is missing, then runs benchmarks/gpu_suite.py
#   benchmarks/gpu_suite.sh --only memory-24gb   # any gpu_suite.py arguments pass through
#   benchmarks/gpu_suite.sh --fetch-wheels       # on a machine WITH network: put the wheels into .whl/
#
# A machine without network installs from .whl/ (fetched beforehand with --fetch-wheels, Python 3.12,
# manylinux x86-64); one with network from PyPI: pip install -e '.[test,fast,gguf]'. torch, transformers,
# accelerate and the rest come with the machine's image. Results: benchmarks/results/ and $OUT when set.
# The steps and their order: benchmarks/gpu_suite.py. On a lent machine that reaches no index: fetch the wheels
# here first (.whl/ is git-ignored: carry it), then run `benchmarks/gpu_suite.sh` there with a 600 s limit.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=.whl
# What a CUDA image with torch/transformers/accelerate lacks, at the versions the GPU tables were measured with.
NEEDED="diffusers==0.42.1 optimum-quanto==0.2.7 torchao==0.18.0 gguf==0.19.0 pydantic==2.14.4 pydantic-core==2.50.5
annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions==4.16.0 importlib-metadata==10.2.0"

if [ "${1:-}" = "--fetch-wheels" ]; then
    mkdir -p "$WHEELS"
    for spec in $NEEDED; do
        $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
            -d "$WHEELS" "$spec" || exit 1
    done
    du -sh "$WHEELS"
    exit 0
fi

started=$(date +%s)
if ! $PY -c "import diffusers, optimum.quanto, torchao, gguf, pydantic" 2>/dev/null; then
    if [ -d "$WHEELS" ] && ls "$WHEELS"/*.whl >/dev/null 2>&1; then
        $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/batch-edit-site \
            "$WHEELS"/*.whl || exit 3
        export PYTHONPATH=/tmp/batch-edit-site${PYTHONPATH:+:$PYTHONPATH}
    else
        $PY -m pip install -q -e '.[test,fast,gguf]' || exit 3
    fi
fi
echo "gpu suite: installed in $(( $(date +%s) - started )) s" >&2
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
exec $PY benchmarks/gpu_suite.py "$@"
