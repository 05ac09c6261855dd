#!/usr/bin/env bash
# Run bench/quality.py rows on a lent GPU machine (the `device` tool) and send the run folders back.
#
# The device machine starts bare, has PyTorch (CUDA) but not this repo's venv, runs one command for at most
# 10 minutes and is given back ~30 s after a call. So each call: trains the queued rows until BUDGET seconds
# (an interrupted run keeps its last finished epoch in checkpoints/last.pt), then packs the rows' run folders
# into $OUT/runs.tgz.NN parts (<= 15 MiB each: the tool returns files of at most 16 MiB).
# Back here, unpack with bench/gpu_unpack.sh; a later call carries runs/gpu to resume unfinished rows (a call
# carries at most 64 MiB: data/Scientific is ~40 MB and a CCFRec run folder ~40 MB, so prefer rows that finish
# within one call).
#
#   device run, carry ["data/Scientific", "runs/gpu"]:
#     bash bench/gpu_queue.sh 540 ccfrec/Scientific,ccfrec/Scientific@model_params.mlm_weight=0 1
#
# Arguments: BUDGET (seconds of training), SPECS (bench/quality.py --configs), SEEDS (default 1).
# Runs live in runs/gpu (not runs/bench), so GPU rows never mix with CPU rows in one mean.
set -uo pipefail
budget=${1:?budget seconds}
specs=${2:?comma-separated configs}
seeds=${3:-1}
out=${OUT:-/tmp/gpu_out}
mkdir -p "$out" runs/gpu
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
PY=${PY:-python3}
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
# SIGINT lets the trainer stop like a Ctrl-C; the finished epochs are already checkpointed.
timeout -s INT -k 30 "$budget" $PY bench/quality.py --configs "$specs" --seeds "$seeds" --runs runs/gpu \
    --out "$out/quality_gpu.md" 2>&1 | tee "$out/queue.log"
echo "quality.py exit: ${PIPESTATUS[0]} (124/130 = budget reached; finished epochs are checkpointed)"
folders=()
IFS=, read -ra list <<<"$specs"
for spec in "${list[@]}"; do
  for ((s = 2020; s < 2020 + seeds; s++)); do
    f="runs/gpu/${spec//\//-}-s$s"
    [[ -d $f ]] && folders+=("$f")
  done
done
if ((${#folders[@]})); then
  tar czf - --exclude=tb "${folders[@]}" | split -b 15M -d - "$out/runs.tgz."
  ls -l "$out"
fi
