#!/usr/bin/env bash
# One GPU lease, start to end, on the device image as it is (python3 3.12 with torch 2.11+cu130, numpy 2.5,
# lightning 2.6.6; no make, no forecast installed). Run from the repository root, as ONE device call:
#
#   run(command="bash scripts/gpu-lease.sh", carry=[".whl"], timeout_s=560)
#
# 1. installs the carried wheels (.whl/, `make gpu-wheels` here: only what the image lacks) into
#    $SITE beside the image's own packages, never over its torch;
# 2. runs, each as its own process under its own time limit (a hang costs one section):
#      tests    the gpu-marked tests (pytest -m gpu)                                      limit  60 s
#      models   gpu_check: 200M and 2B with the CUDA defaults                           limit 130 s
#      search   gpu_check: a 2B search, 3 trials x 2 epochs                             limit 150 s
#      compile  gpu_check: 200M again with --model.compile (inductor)                    limit  80 s
#      small    gpu_check: trials per hour of a 2M search, 4 workers on the GPU          limit  60 s
#    all under ONE overall `timeout` of LEASE_S; a section starts with min(its limit, what is left)
#    and is recorded as skipped when under MIN_S is left;
# 3. writes each finished section's JSON under $OUT as it goes ($OUT/<section>.json, plus lease.log),
#    and prints a summary (also $OUT/summary.json): per model or trial, the planner's peak against the
#    measured one, MFU, samples/s, compile on/off and whether it ran compiled, OOMs, what was skipped.
#
# EXPECTED DEVICE TIME (15 minutes per task, start-up included): machine start ~1-2 min + this script
# <= LEASE_S = 8 min (wheels ~20 s, sections ~7.5 min at their limits) + transfers and the 30 s warm
# wait ~0.5 min: about 10-11 min, leaving ~4 min to rerun one section on the still-warm machine
# (SECTIONS="compile" bash scripts/gpu-lease.sh). docs/gpus.md says the same.
#
# Settings (environment): OUT (default lease-out), LEASE_S (480), SECTIONS ("tests models search compile
# small"), MIN_S (20), LIMIT_SCALE (1; each section's limit times this, for a slow or loaded machine),
# PYTHON (python3), SITE (/tmp/site), WHEELS (.whl), REHEARSE=1 (the CPU rehearsal:
# gpu_check --rehearse, CUDA defaults forced at tiny sizes; the gpu tests skip without CUDA),
# DRY_RUN=1 (print the plan and the wheel check, run nothing).
set -uo pipefail

OUT=${OUT:-lease-out}
LEASE_S=${LEASE_S:-480}
SECTIONS=${SECTIONS:-tests models search compile small}
MIN_S=${MIN_S:-20}
LIMIT_SCALE=${LIMIT_SCALE:-1}
PYTHON=${PYTHON:-python3}
SITE=${SITE:-/tmp/site}
WHEELS=${WHEELS:-.whl}
REHEARSE=${REHEARSE:-0}
DRY_RUN=${DRY_RUN:-0}
SUMMARY_S=15  # kept back from LEASE_S for the summary after the overall timeout
TESTS_XML=${TMPDIR:-/tmp}/gpu-lease-tests.xml
export OUT PYTHON REHEARSE SECTIONS MIN_S LIMIT_SCALE TESTS_XML

limit_of() {  # a section's own time limit, seconds
  case $1 in
    tests) echo 60 ;; models) echo 130 ;; search) echo 150 ;; compile) echo 80 ;; small) echo 60 ;;
    *) echo "gpu-lease: unknown section '$1' (tests models search compile small)" >&2; return 1 ;;
  esac
}

command_of() {  # a section's command line
  local check=("$PYTHON" -m forecast.bench.gpu_check --only "$1" --out "$OUT/$1.json" --minutes "$2")
  [[ $REHEARSE == 1 ]] && check+=(--rehearse)
  case $1 in
    tests) echo "$PYTHON" -m pytest -q -m gpu -o addopts= -p no:cacheprovider --junit-xml="$TESTS_XML" \
                $(grep -l "mark.gpu" tests/test_*.py) ;;
    *) echo "${check[@]}" ;;
  esac
}

run_sections() {  # inside the overall timeout: each section as its own process under its own limit
  local name limit left start rc minutes
  for name in $SECTIONS; do
    limit=$(limit_of "$name") || return 2
    limit=$((limit * LIMIT_SCALE))
    left=$((DEADLINE - $(date +%s)))
    ((left < limit)) && limit=$left
    if ((limit < MIN_S)); then
      "$PYTHON" scripts/lease_json.py section "$OUT" "$name" -1 0 "$((limit > 0 ? limit : 0))"
      echo "== $name: skipped ($limit s left)"
      continue
    fi
    minutes=$(awk "BEGIN {print ($limit - 10) / 60}")  # gpu_check's own budget: it skips a late model itself
    echo "== $name (limit $limit s): $(command_of "$name" "$minutes")"
    start=$(date +%s)
    # shellcheck disable=SC2046
    timeout -k 5 "$limit" $(command_of "$name" "$minutes") >>"$OUT/lease.log" 2>&1 &
    SECTION_PID=$!  # its own process group (timeout's): the overall timeout's TERM is passed on to it
    wait "$SECTION_PID"
    rc=$?
    "$PYTHON" scripts/lease_json.py section "$OUT" "$name" "$rc" "$(($(date +%s) - start))" "$limit" \
      $([[ $name == tests ]] && echo "$TESTS_XML")
    echo "   exit $rc after $(($(date +%s) - start)) s"
  done
}

if [[ ${1:-} == --sections ]]; then  # the inner part, under the overall timeout
  SECTION_PID=
  trap '[[ -n $SECTION_PID ]] && kill -TERM -- "-$SECTION_PID" 2>/dev/null; exit 124' TERM
  run_sections
  exit $?
fi

if [[ $DRY_RUN == 1 ]]; then
  echo "gpu-lease plan: LEASE_S=$LEASE_S, OUT=$OUT, SITE=$SITE, REHEARSE=$REHEARSE"
  for name in $SECTIONS; do
    echo "  $name (limit $(limit_of "$name") s): $(command_of "$name" X)" || exit 2
  done
  echo "  wheels: $(ls "$WHEELS"/*.whl 2>/dev/null | wc -l) in $WHEELS ($(du -sm "$WHEELS" 2>/dev/null | cut -f1) MiB)"
  exit 0
fi

mkdir -p "$OUT"
: >"$OUT/lease.log"
LEASE_START=$(date +%s)
export DEADLINE=$((LEASE_START + LEASE_S - SUMMARY_S))

echo "== wheels: $(ls "$WHEELS"/*.whl 2>/dev/null | wc -l) from $WHEELS into $SITE"
if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  timeout 120 "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" "$WHEELS"/*.whl >>"$OUT/lease.log" 2>&1 \
    || { echo "gpu-lease: installing the wheels failed (see $OUT/lease.log)"; tail -5 "$OUT/lease.log"; exit 1; }
fi
export PYTHONPATH="$SITE:$PWD"
export PYTHONUNBUFFERED=1
"$PYTHON" -c "import sys, torch, numpy, lightning, optuna, jsonargparse, talib, forecast
print(f'python {sys.version.split()[0]}, torch {torch.__version__} (CUDA {torch.version.cuda}, '
      f'{torch.cuda.get_device_name(0) if torch.cuda.is_available() else \"no GPU\"}), numpy {numpy.__version__}, '
      f'lightning {lightning.__version__}, optuna {optuna.__version__}')" 2>&1 | tee -a "$OUT/lease.log"

left=$((DEADLINE - $(date +%s)))
if ((left > 0)); then
  timeout -k 10 "$left" bash "$0" --sections
  rc=$?
  ((rc == 124 || rc == 137)) && echo "gpu-lease: the overall limit of $LEASE_S s ended the sections"
fi
"$PYTHON" scripts/lease_json.py summary "$OUT" "$LEASE_S"
echo "gpu-lease: $(($(date +%s) - LEASE_START)) s in all; JSON under $OUT"
