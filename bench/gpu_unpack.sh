#!/usr/bin/env bash
# Unpack what bench/gpu_queue.sh or bench/gpu_solid.sh sent back (FOLDER = the device call's files_at) into runs/gpu here (gpu_solid.sh: also data/*/codes/solid-*).
#   bash bench/gpu_unpack.sh /work/.device/<call>/
set -euo pipefail
from=${1:?folder holding runs.tgz.NN}
parts=("$from"/runs.tgz.*)
[[ -e ${parts[0]} ]] || { echo "no runs.tgz.* parts in $from" >&2; exit 1; }
cat "${parts[@]}" | tar xzf -
ls -d runs/gpu/*/
