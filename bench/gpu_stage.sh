#!/usr/bin/env bash
# Stage what bench/gpu_solid.sh needs on the device machine into ignored folders that `device run` can carry:
# .gpu/data/<dataset>/ (parquet files, manifest, CTR samples, the MiniLM "all" view: ~15 MB, where the whole dataset
# folder with its codes and other views is ~80) and .whl/ (the faiss-cpu wheel for CPython 3.12 x86-64: the
# machine has no faiss and no registry; k-means needs it).
#   bash bench/gpu_stage.sh Scientific ml-100k
set -euo pipefail
cd "$(dirname "$0")/.."
(($#)) || { echo "usage: bash bench/gpu_stage.sh DATASET [DATASET...]  (folders under data/)" >&2; exit 2; }
for name in "$@"; do  # every dataset checked before the old staging is removed
  [[ -f data/$name/ctr/ctr/samples.parquet && -f data/$name/embeddings/all-MiniLM-L6-v2/all.npy ]] || {
    echo "data/$name: needs CTR samples and MiniLM vectors (semrec ctr-data data/$name; semrec embed data/$name)" >&2
    exit 1
  }
done
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo /.gpu/ >>.git/info/exclude
rm -rf .gpu
for name in "$@"; do
  src=data/$name dst=.gpu/data/$name
  mkdir -p "$dst/embeddings/all-MiniLM-L6-v2"
  cp -r "$src"/{items.parquet,sequences.parquet,manifest.json,prepare_config.yaml,ctr} "$dst/"
  cp "$src"/embeddings/all-MiniLM-L6-v2/{all.npy,embeddings.json,embed_config.yaml} "$dst/embeddings/all-MiniLM-L6-v2/"
done
if ! compgen -G ".whl/faiss_cpu-*.whl" >/dev/null; then
  version=$(python3 -c "import importlib.metadata as m; print(m.version('faiss-cpu'))" 2>/dev/null || echo 1.15.1)
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "faiss-cpu==$version"
fi
du -sh .gpu .whl
