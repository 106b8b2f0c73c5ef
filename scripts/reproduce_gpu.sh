#!/usr/bin/env bash
# Lesson 6 on one GPU: the pretraining ablation at full (GPU) scale, and the training-step benchmark.
#
#   scripts/reproduce_gpu.sh prepare          HERE: pack what the GPU machine needs into gpu_bundle/
#                                             (the tokenized `large` and `bbc` corpora as one .tar.xz shard,
#                                             and the sentiment snippets; about 25 MB, at most 50 MB)
#   scripts/reproduce_gpu.sh run OUTDIR       THERE: check python/torch/CUDA, import the shard, run
#                                             `python -m deberta_edu.reproduce --scale gpu` (about 8 minutes)
#                                             and `python -m deberta_edu.bench --preset base --device cuda`;
#                                             results and one log land in OUTDIR
#   REPRO_SMOKE=1 scripts/reproduce_gpu.sh run OUTDIR
#                                             the same path on this machine's CPU at smoke size (a minute or two)
#
# The GPU machine has no network: it gets a copy of the working tree, plus gpu_bundle/ (git-ignored, so carry
# it along). It needs python3 with torch (CUDA), numpy, safetensors, sentencepiece, matplotlib, tqdm, and
# transformers for the benchmark; `run` checks them first and says what is missing.
# Environment: PYTHON (default .venv/bin/python if present, else python3), BUNDLE (default gpu_bundle),
# DATA_DIR (where `run` unpacks the shard; default $TMPDIR/deberta-edu-gpu-data, never inside the bundle),
# COMPILE=1 (torch.compile the encoder layers), BENCH=0 (skip the benchmark), BUDGET (s, default 570: the
# benchmark gets what is left of it after the reproduction, at most BENCH_TIMEOUT, default 150 s).
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
  sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
}

prepare() {
  mkdir -p "$BUNDLE"
  # the packed corpora (built once here; `large` needs `python -m deberta_edu.corpus fetch large` first)
  "$PYTHON" -m deberta_edu.packing build large --vocab-size 32000 --max-seq-length 512
  "$PYTHON" -m deberta_edu.packing build bbc --vocab-size 8000 --max-seq-length 128
  local root
  root=$("$PYTHON" -c "from deberta_edu.facts import data_root; print(data_root())")
  "$PYTHON" -m deberta_edu.packing export "$SHARD" "$root/packed/large-v32000-L512" "$root/packed/bbc-v8000-L128"
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
for name in ("torch", "numpy", "safetensors", "sentencepiece", "matplotlib", "tqdm", "transformers"):
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
if [m for m in missing if m != "transformers"]:
    print(f"error: missing {missing}; carry them as wheels (see the device notes) or install them")
    sys.exit(3)
EOF
}

run() {
  local out=${1:?usage: scripts/reproduce_gpu.sh run OUTDIR}
  mkdir -p "$out"
  local log=$out/run.log
  exec > >(tee -a "$log") 2>&1
  local start=$SECONDS
  echo "== $(date -u +%FT%TZ) scripts/reproduce_gpu.sh run $out (REPRO_SMOKE=${REPRO_SMOKE:-0}, COMPILE=${COMPILE:-0})"
  local device=cuda scale=gpu bench_args=(--preset base --device cuda --dtype bf16)
  if [[ ${REPRO_SMOKE:-0} == 1 ]]; then
    device=cpu scale=smoke bench_args=(--preset cpu --device cpu --rounds 2 --warmup 1)
  fi
  check_environment "$device"

  [[ -f $SHARD && -f $SNIPPETS ]] || { echo "error: $SHARD or $SNIPPETS missing: run 'scripts/reproduce_gpu.sh prepare' here and carry $BUNDLE"; exit 1; }
  # read the corpora from the imported shard, nothing else; outside the bundle, which must stay small to travel
  export DEBERTA_EDU_DATA=${DATA_DIR:-${TMPDIR:-/tmp}/deberta-edu-gpu-data}
  echo "== importing $SHARD into $DEBERTA_EDU_DATA"
  "$PYTHON" -m deberta_edu.packing import "$SHARD" "$DEBERTA_EDU_DATA" >/dev/null
  echo "   checksums ok ($((SECONDS - start)) s)"

  local compile=()
  [[ ${COMPILE:-0} == 1 ]] && compile=(--compile)
  echo "== reproduction: scale $scale on $device"
  "$PYTHON" -m deberta_edu.reproduce --scale "$scale" --device "$device" --out "$out/ablation-$scale" \
    --sentiment-file "$SNIPPETS" "${compile[@]}"
  echo "   reproduction done ($((SECONDS - start)) s)"

  local left=$(( ${BUDGET:-570} - (SECONDS - start) ))
  (( left > ${BENCH_TIMEOUT:-150} )) && left=${BENCH_TIMEOUT:-150}
  if [[ ${BENCH:-1} != 1 ]]; then
    echo "== benchmark skipped (BENCH=${BENCH})"
  elif (( left < 45 )); then
    echo "== benchmark skipped: only ${left} s left of BUDGET=${BUDGET:-570}"
  else
    echo "== benchmark (at most ${left} s): ${bench_args[*]}"
    # a failed or slow benchmark must not cost the reproduction's results, which are written by now
    timeout "$left" "$PYTHON" -m deberta_edu.bench "${bench_args[@]}" --json "$out/bench.json" \
      || echo "   benchmark failed or timed out (exit $?); the reproduction's results stand"
  fi
  echo "== done in $((SECONDS - start)) s; files:"
  find "$out" -type f | sort
}

case ${1:-} in
  prepare) prepare ;;
  run) shift; run "$@" ;;
  *) usage ;;
esac
