#!/usr/bin/env bash
# Train bench/solid.py's rows on a lent GPU machine (the `device` tool), many at once, and send the run folders back.
#
# One dsr / solid training is small (32-d ids, batch 1024): it leaves an H200 mostly idle and is bound by its one
# CPU thread, so this runs one process per "lane" and many lanes side by side (the machine has 16 cores). For each
# DATASET:BACKBONE:SEED three lanes:
#   1. duet (stage 1 of both SOLID chains), then apg+solid (semantic ids, APG on semantic rows, APG+SOLID)
#   2. apg, then -- once lane 1 has written the semantic ids -- duet+solid (DUET on semantic rows, DUET+SOLID)
#   3. base
# so no two processes ever train the same run folder or write the same semantic ids. At BUDGET seconds every
# training gets SIGINT (it stops like a Ctrl-C; finished epochs are in checkpoints/last.pt, resumable anywhere) and
# the run folders, logs and semantic-id folders are packed into $OUT/runs.tgz.NN (<= 15 MiB each; a finished run
# without its last.pt). Back here: bench/gpu_unpack.sh; a stage the budget cut off finishes with
# `semrec train --resume <its run folder>` (its own saved config); then
# `python bench/solid.py --runs runs/gpu/solid --report-only ...` tabulates them (s/epoch: under this load).
# A later device call that finds the machine still warm (runs/ is kept there) resumes every unfinished row.
#
#   stage the data (ignored .gpu/: each dataset's parquet files, CTR samples and MiniLM "all" vectors, ~15 MB) and
#   the faiss-cpu wheel (k-means; ignored .whl/) with bench/gpu_stage.sh, then
#   device run, carry [".gpu", ".whl"]:
#     bash bench/gpu_solid.sh 520 Scientific:gru4rec:2020,Scientific:din:2020,ml-100k:sasrec:2020
#
# Arguments: BUDGET (seconds), JOBS (comma-separated DATASET:BACKBONE:SEED), then extra bench/solid.py arguments
# for every process (e.g. --set train.max_steps_per_epoch=5 for a smoke run; NOT for reporting).
set -uo pipefail
budget=${1:?budget seconds}
jobs=${2:?comma-separated DATASET:BACKBONE:SEED}
shift 2
[[ $budget =~ ^[1-9][0-9]*$ ]] || { echo "BUDGET must be a positive number of seconds, got '$budget'" >&2; exit 2; }
IFS=, read -ra list <<<"$jobs"
for job in "${list[@]}"; do  # every row checked before anything is written or trained
  IFS=: read -r dataset backbone seed <<<"$job"
  [[ -n $dataset && $backbone =~ ^(sasrec|gru4rec|bert4rec|din)$ && $seed =~ ^[0-9]+$ && ( -d data/$dataset || -d .gpu/data/$dataset ) ]] || {
    echo "bad row '$job': want DATASET:BACKBONE:SEED, BACKBONE one of sasrec gru4rec bert4rec din, data/DATASET" \
      "present (staged by bench/gpu_stage.sh)" >&2
    exit 2
  }
done
out=${OUT:-/tmp/gpu_out}
runs=runs/gpu/solid
logs=$runs/logs
mkdir -p "$out" "$logs"
PY=${PY:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site
fi
if [[ -d .gpu/data ]]; then mkdir -p data && cp -r .gpu/data/. data/; fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else '', flush=True)"
start=$SECONDS
left() { echo $((budget - (SECONDS - start))); }

solid() {  # solid() LOG DATASET BACKBONE SEED METHODS: one bench/solid.py call, stopped at the budget
  local log=$1 dataset=$2 backbone=$3 seed=$4 methods=$5
  (($(left) > 5)) || { echo "budget spent before $methods" >>"$log"; return; }
  timeout -s INT -k 30 "$(left)" $PY bench/solid.py --datasets "$dataset" --backbones "$backbone" --methods "$methods" \
    --seeds 1 --first-seed "$seed" --runs "$runs" --out "$logs/table-$dataset-$backbone-s$seed-${methods//[+,]/_}.md" \
    "${EXTRA[@]}" >>"$log" 2>&1
  echo "solid.py $methods exit $? at $((SECONDS - start)) s" >>"$log"
}
EXTRA=("$@")
pids=()
for job in "${list[@]}"; do
  IFS=: read -r dataset backbone seed <<<"$job"
  tag=$dataset-$backbone-s$seed
  # lane 1's chain folder (its name carries any --set as @key=value): 3-semantic appears once the ids are written
  ids_ready="$runs/$dataset-$backbone-apg+solid*-s$seed/solid-$dataset-$backbone-apg-id+text/3-semantic"
  (solid "$logs/$tag-lane1.log" "$dataset" "$backbone" "$seed" duet,apg+solid) &
  pids+=($!)
  (solid "$logs/$tag-lane2.log" "$dataset" "$backbone" "$seed" apg
   while ! compgen -G "$ids_ready" >/dev/null && (($(left) > 5)); do sleep 5; done
   solid "$logs/$tag-lane2.log" "$dataset" "$backbone" "$seed" duet+solid) &
  pids+=($!)
  (solid "$logs/$tag-lane3.log" "$dataset" "$backbone" "$seed" base) &
  pids+=($!)
done
# the monitor's sleep must not hold stdout: a caller piping this script (| tail) would wait for it past the budget
(while (($(left) > 0)); do sleep 60 >/dev/null; echo "-- $((SECONDS - start)) s"
   nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader 2>/dev/null; done) &
monitor=$!
wait "${pids[@]}"
pkill -P "$monitor" 2>/dev/null
kill "$monitor" 2>/dev/null
echo "== all lanes done at $((SECONDS - start)) s"
for f in "$logs"/*.log; do echo "--- $f"; tail -n 4 "$f"; done
find "$runs" -name results.json | sort
# the semantic ids travel too: a SOLID run reads its codes folder (named in its config) when it is evaluated
# a finished run needs only checkpoints/best.pt (evaluation); an unfinished one keeps last.pt to resume from
skip=(--exclude=tb)
while IFS= read -r done; do skip+=("--exclude=$(dirname "$done")/checkpoints/last.pt"); done \
  < <(find "$runs" -name results.json)
tar czf - "${skip[@]}" "$runs" $(compgen -G "data/*/codes/solid-*") | split -b 15M -d - "$out/runs.tgz."
ls -l "$out"
