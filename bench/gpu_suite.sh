#!/usr/bin/env bash
# The 7B/3B GPU measurements in a few calls of at most 10 minutes, JSON lines in $OUT (see bench/README.md, "On a GPU").
#
#   here (network):  REFERENCE=path/to/hf_peft_baseline.py bash bench/gpu_suite.sh prepare
#                    # wheels + a copy of the reference into .whl/ (git-ignored)
#   on the GPU:      bash bench/gpu_suite.sh STAGE [7b|3b|tiny] [bench flags...]   (.whl/ beside the checkout; one stage
#                    per call fits 10 min; e.g. `rollout 7b --configs 1x1,1xG` then `rollout 7b --configs 4x1`)
#
# STAGE: baseline  the stock reference (hf_peft_baseline.py, copied by prepare from $REFERENCE) with the image's transformers,
#                  whose module names its LoRA regex was written for;
#        sft       bench_sft.py, our levers vs stock, plain and checkpointed, batch 1 and 4;
#        rollout   bench_rollout.py, static cache + compiled decode vs HF generate, G=4;
#        qlora     bench_sft.py with nf4 LM linears (needs the bitsandbytes wheel).
# The bench stages install the pinned transformers/peft (and bitsandbytes) wheels from .whl/ over the image's
# copies into /tmp/site first. `PYTHON=.venv/bin/python bash bench/gpu_suite.sh sft tiny` runs a stage on CPU.
set -uo pipefail
cd "$(dirname "$0")/.."
stage=${1:?usage: bench/gpu_suite.sh prepare|baseline|sft|rollout|qlora [7b|3b|tiny]}
size=${2:-7b}
py=${PYTHON:-python3}
out=${OUT:-/tmp/avcot_bench}
wheels=${WHEELS:-.whl}
mkdir -p "$out"
export OUT=$out PYTHONUNBUFFERED=1

pins() {  # the versions this project pins (read from the local environment, so they cannot drift)
  .venv/bin/python -c 'import transformers, peft, bitsandbytes as b; print(f"transformers=={transformers.__version__} peft=={peft.__version__} bitsandbytes=={b.__version__}")' 2>/dev/null
}

use_wheels() {  # put the carried wheels first on the path; a stage without them uses the image's packages
  compgen -G "$wheels/*.whl" >/dev/null || { echo "[suite] no $wheels/*.whl: using installed packages"; return 0; }
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$wheels"/*.whl \
    || exit 3
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
}

case "$stage" in
  prepare)
    mkdir -p "$wheels"
    # shellcheck disable=SC2046 -- pins() prints several requirement words
    .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
      -d "$wheels" $(pins) || exit 3
    cp "${REFERENCE:?set REFERENCE to the stock HF + PEFT baseline script (hf_peft_baseline.py)}" "$wheels"/ || exit 3
    du -ch "$wheels"/* ;;
  baseline)
    ref=$wheels/hf_peft_baseline.py
    [ -f "$ref" ] || { echo "[suite] $ref missing: run 'bench/gpu_suite.sh prepare' here first" >&2; exit 2; }
    "$py" "$ref" "$size" ;;
  sft)
    use_wheels
    "$py" bench/bench_sft.py --size "$size" --levers cache,label --modes plain,ckpt --bsz 1,4 "${@:3}" ;;
  rollout)
    use_wheels
    "$py" bench/bench_rollout.py --size "$size" --new "${NEW:-256}" --group 4 --check-tokens 32 "${@:3}" ;;
  qlora)
    use_wheels
    "$py" bench/bench_sft.py --size "$size" --quant nf4 --levers cache,label,ckpt --modes ckpt --bsz 1 --no-stock "${@:3}" ;;
  *)
    echo "unknown stage '$stage' (prepare|baseline|sft|rollout|qlora)" >&2; exit 2 ;;
esac
