#!/usr/bin/env bash
# Lesson 6 on one GPU: the pretraining ablation at GPU scale, then the training-step benchmark.
#
#   scripts/reproduce_gpu.sh prepare          HERE: pack what the GPU machine needs into gpu_bundle/
#                                             (the tokenized `large` and `bbc` corpora and BBC's topic folders as
#                                             one .tar.xz shard, and the sentiment snippets; at most 50 MB)
#   scripts/reproduce_gpu.sh run OUTDIR       THERE: check python and its packages, import the shard, then
#                                             `python -m deberta_edu.reproduce --scale gpu --smoke-first`: every
#                                             variant a few steps in bf16 first (stops on any failure), the FLOP
#                                             budget fitted to each variant's measured step time, one JSON per run
#                                             as it ends, no run started that would end after the deadline;
#                                             then `python -m deberta_edu.bench` with the time that is left
#   the same `run OUTDIR` again               resumes: finished runs are kept, the missing ones are made
#   REPRO_SMOKE=1 scripts/reproduce_gpu.sh run OUTDIR
#                                             the same path on this machine's CPU at smoke size (a few minutes)
#
# The GPU machine has no network: it gets a copy of the working tree, plus gpu_bundle/ (git-ignored, so carry
# it along). It needs python3 with torch (CUDA), numpy, safetensors, sentencepiece, matplotlib, tqdm, scipy
# (the verdicts; without it the runs are made and the report is rebuilt here later), and transformers for
# the benchmark; `run` checks them first and says what is missing.
# Environment: PYTHON (default .venv/bin/python if present, else python3), BUNDLE (default gpu_bundle),
# DATA_DIR (where `run` unpacks the shard; default $TMPDIR/deberta-edu-gpu-data, never inside the bundle),
# COMPILE=1 (torch.compile the encoder layers; its time is measured and counted), BENCH=0 (skip the benchmark),
# BUDGET (s, default 540: the whole command; runs fitted to 380 s of it, or to what is left if less; none starts
# that would end after BUDGET − MARGIN, MARGIN default 40 s), BENCH_TIMEOUT (default 150 s), FIT_SECONDS (REPRO_SMOKE
# only: fit the smoke budget too).
set -euo pipefail
cd "$(dirname "$0")/.."

BUNDLE=${BUNDLE:-gpu_bundle}
SHARD=$BUNDLE/packed-large-bbc.tar.xz
SNIPPETS=$BUNDLE/movieReviewSnippets_GroundTruth.txt
MAX_SHARD_MB=50
if [[ -z ${PYTHON:-} ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONUNBUFFERED=1

usage() {
  awk 'NR == 1 {next} /^#/ {print; next} {exit}' "$0" | sed 's/^# \{0,1\}//'  # the header, however long
  exit 2
}

prepare() {
  mkdir -p "$BUNDLE"
  # the packed corpora (built once here; `large` needs `python -m deberta_edu.corpus fetch large` first)
  "$PYTHON" -m deberta_edu.packing build large --vocab-size 32000 --max-seq-length 512
  "$PYTHON" -m deberta_edu.packing build bbc --vocab-size 8000 --max-seq-length 128
  local root
  root=$("$PYTHON" -c "from deberta_edu.facts import data_root; print(data_root())")
  # BBC's raw topic folders travel too: the topic probe reads them (about 2 MB compressed)
  "$PYTHON" -m deberta_edu.packing export "$SHARD" "$root/packed/large-v32000-L512" "$root/packed/bbc-v8000-L128" \
    "$root/bbc/raw"
  local bytes
  bytes=$(stat -c %s "$SHARD")
  if (( bytes > MAX_SHARD_MB * 1000000 )); then
    echo "error: $SHARD is $((bytes / 1000000)) MB, over the ${MAX_SHARD_MB} MB the device transfer allows" >&2
    exit 1
  fi
  cp "$("$PYTHON" -c "from deberta_edu.data.sentiment import data_file; print(data_file())")" "$SNIPPETS"
  du -sh "$BUNDLE"/*
  echo "ready: carry '$BUNDLE' to the GPU machine and run: scripts/reproduce_gpu.sh run OUTDIR"
}

check_environment() {
  # prints what is there; exits 3 when something needed is missing
  "$PYTHON" - "$1" <<'EOF'
import importlib, platform, sys
need_cuda = sys.argv[1] == "cuda"
print(f"python {platform.python_version()} at {sys.executable}")
missing = []
for name in ("torch", "numpy", "safetensors", "sentencepiece", "matplotlib", "tqdm", "scipy", "transformers"):
    try:
        module = importlib.import_module(name)
        print(f"  {name} {getattr(module, '__version__', '?')}")
    except ImportError as err:
        print(f"  {name}: MISSING ({err})")
        missing.append(name)
if "torch" not in missing:
    import torch
    print(f"torch.cuda.is_available() = {torch.cuda.is_available()} (torch {torch.__version__}, CUDA {torch.version.cuda})")
    if torch.cuda.is_available():
        print(f"  GPU: {torch.cuda.get_device_name()}, bf16 supported: {torch.cuda.is_bf16_supported()}, "
              f"{torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB")
    elif need_cuda:
        print("error: this torch sees no GPU; the gpu scale needs one (REPRO_SMOKE=1 runs the CPU smoke path)")
        sys.exit(3)
if "scipy" in missing:
    print("warning: without scipy the runs are made but not tested; rebuild the report where scipy is installed: "
          "python -m deberta_edu.reproduce --rebuild OUTDIR/ablation-gpu")
if [m for m in missing if m not in ("transformers", "scipy")]:
    print(f"error: missing {missing}; carry them as wheels (see the device notes) or install them")
    sys.exit(3)
EOF
}

run() {
  local out=${1:?usage: scripts/reproduce_gpu.sh run OUTDIR}
  mkdir -p "$out"
  local log=$out/run.log
  exec > >(tee -a "$log") 2>&1
  local start=$SECONDS budget=${BUDGET:-540} margin=${MARGIN:-40}
  echo "== $(date -u +%FT%TZ) scripts/reproduce_gpu.sh run $out (REPRO_SMOKE=${REPRO_SMOKE:-0}, COMPILE=${COMPILE:-0}, BUDGET=$budget)"
  local device=cuda scale=gpu bench_args=(--preset base --device cuda --dtype bf16) extra=()
  if [[ ${REPRO_SMOKE:-0} == 1 ]]; then
    device=cpu scale=smoke bench_args=(--preset cpu --device cpu --rounds 2 --warmup 1)
    [[ -n ${FIT_SECONDS:-} ]] && extra=(--fit-seconds "$FIT_SECONDS")
  fi
  check_environment "$device"

  [[ -f $SHARD && -f $SNIPPETS ]] || { echo "error: $SHARD or $SNIPPETS missing: run 'scripts/reproduce_gpu.sh prepare' here and carry $BUNDLE"; exit 1; }
  # read the corpora from the imported shard, nothing else; outside the bundle, which must stay small to travel
  export DEBERTA_EDU_DATA=${DATA_DIR:-${TMPDIR:-/tmp}/deberta-edu-gpu-data}
  echo "== importing $SHARD into $DEBERTA_EDU_DATA"
  "$PYTHON" -m deberta_edu.packing import "$SHARD" "$DEBERTA_EDU_DATA" >/dev/null
  echo "   checksums ok ($((SECONDS - start)) s)"

  [[ ${COMPILE:-0} == 1 ]] && extra+=(--compile)
  local deadline=$(( budget - margin - (SECONDS - start) ))
  echo "== reproduction: scale $scale on $device, smoke check first; no run starts that would end after ${deadline} s"
  local rc=0
  "$PYTHON" -m deberta_edu.reproduce --scale "$scale" --device "$device" --out "$out/ablation-$scale" \
    --sentiment-file "$SNIPPETS" --smoke-first --deadline "$deadline" "${extra[@]}" || rc=$?
  if (( rc == 4 )); then
    echo "   INCOMPLETE after $((SECONDS - start)) s: run the same command again to make the missing runs"
  elif (( rc != 0 )); then
    echo "error: the reproduction stopped (exit $rc); see above. Finished runs are kept in $out/ablation-$scale/runs"
    exit "$rc"
  else
    echo "   reproduction complete ($((SECONDS - start)) s)"
  fi

  local left=$(( budget - (SECONDS - start) - 10 ))
  (( left > ${BENCH_TIMEOUT:-150} )) && left=${BENCH_TIMEOUT:-150}
  if [[ ${BENCH:-1} != 1 ]]; then
    echo "== benchmark skipped (BENCH=${BENCH})"
  elif (( left < 45 )); then
    echo "== benchmark skipped: only ${left} s left of BUDGET=${budget}"
  else
    echo "== benchmark (at most ${left} s): ${bench_args[*]}"
    # a failed or slow benchmark must not cost the reproduction's results, which are written by now
    timeout "$left" "$PYTHON" -m deberta_edu.bench "${bench_args[@]}" --json "$out/bench.json" \
      || echo "   benchmark failed or timed out (exit $?); the reproduction's results stand"
  fi
  echo "== done in $((SECONDS - start)) s; files:"
  find "$out" -type f | sort
  return "$rc"
}

case ${1:-} in
  prepare) prepare ;;
  run) shift; run "$@" ;;
  *) usage ;;
esac
