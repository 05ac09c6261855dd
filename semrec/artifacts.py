"""The folders semrec writes and reads, each as a small class that owns its layout (every file name lives here).

* :class:`DatasetFolder` ``<dataset>/``: ``manifest.json``, ``items.parquet``, ``sequences.parquet``, and under it
  ``embeddings/<model>/`` (:class:`EmbeddingsFolder`) and ``codes/<name>/`` (:class:`CodesFolder`);
* :class:`EmbeddingsFolder`: ``embeddings.json`` (the manifest), ``<view>.npy``, ``embed_config.yaml``;
* :class:`CodesFolder`: ``codes.npy``, ``tokenizer/``, ``codes.json``, ``report.json``, ``codes_config.yaml``;
* :class:`CtrFolder` ``<dataset>/ctr/<name>/``: ``samples.parquet``, ``ctr.json``, ``ctr_config.yaml``;
* :class:`RunFolder` ``<run>/``: ``config.yaml``, ``fingerprints.json``, ``metrics.jsonl``, ``tb/``, ``curve.png``,
  ``checkpoints/last.pt`` and ``best.pt``, ``results.json``, ``cold_items.npz``.

The classes only name paths and read or write the small manifests (JSON and YAML, atomically through
:mod:`semrec.io`); loading matrices, tokenizers and models stays with their owners (:mod:`semrec.runs`,
:mod:`semrec.text.encode`, :mod:`semrec.tokenizers`). No import of torch or of another semrec stage.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

from semrec.errors import SemrecError
from semrec.io import read_json, require_artifact, sha256_file, write_json

CODES_FIX = "re-run 'semrec codes' to rebuild it"


class MissingCheckpoint(SemrecError):
    """A run folder lacks the checkpoint a command needs."""


class DatasetFolder:
    """A prepared dataset folder (``semrec prepare``)."""

    MANIFEST = "manifest.json"
    ITEMS = "items.parquet"
    SEQUENCES = "sequences.parquet"

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @property
    def manifest(self) -> Path:
        return self.root / self.MANIFEST

    def exists(self) -> bool:
        """Whether the folder holds a prepared dataset (its manifest)."""
        return self.manifest.is_file()

    def manifest_sha256(self) -> str:
        return sha256_file(self.manifest)

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        """Write ``manifest.json`` (atomically, after the data files) with the data files' sha256 under
        ``files_sha256``. When the folder already held this manifest but for ``created_at`` (same sources, options
        and written bytes), the earlier date is kept: re-preparing unchanged data leaves the file byte-identical,
        so what was built on it (embeddings, codes, CTR samples, runs: all keyed on its sha256) stays current.
        ``manifest`` is updated in place."""
        manifest["files_sha256"] = {name: sha256_file(self.root / name) for name in (self.ITEMS, self.SEQUENCES)}
        if self.exists() and "created_at" in manifest:
            try:
                old = read_json(self.manifest)
            except SemrecError:  # an unreadable earlier manifest is simply replaced
                old = None
            new = json.loads(json.dumps(manifest))
            if (isinstance(old, dict) and "created_at" in old
                    and {**old, "created_at": None} == {**new, "created_at": None}):
                manifest["created_at"] = old["created_at"]
        write_json(self.manifest, manifest)

    @property
    def embeddings_root(self) -> Path:
        """The folder of every text encoder's embeddings folder."""
        return self.root / "embeddings"

    def embeddings(self, model: str) -> EmbeddingsFolder:
        """The view embeddings of text encoder ``model`` (a name or a local folder)."""
        slug = Path(model.rstrip("/")).name if Path(model).exists() else model.replace("/", "__")
        return EmbeddingsFolder(self.embeddings_root / slug)

    def embeddings_folders(self) -> list[EmbeddingsFolder]:
        """Every embeddings folder with a manifest, by name."""
        base = self.embeddings_root
        found = sorted(p for p in base.iterdir() if (p / EmbeddingsFolder.MANIFEST).is_file()) if base.is_dir() else []
        return [EmbeddingsFolder(p) for p in found]

    def codes(self, name: str) -> CodesFolder:
        """The codes folder ``codes/<name>`` (``semrec codes --name``)."""
        return CodesFolder(self.root / "codes" / name)

    def ctr(self, name: str) -> CtrFolder:
        """The CTR samples folder ``ctr/<name>`` (``semrec ctr-data --name``)."""
        return CtrFolder(self.root / "ctr" / name)


class EmbeddingsFolder:
    """``<dataset>/embeddings/<model>/``: one ``<view>.npy`` per text view (row 0 = padding) and their manifest."""

    MANIFEST = "embeddings.json"
    SETTINGS = "embed_config.yaml"

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def manifest(self) -> Path:
        return self.path / self.MANIFEST

    @property
    def settings(self) -> Path:
        return self.path / self.SETTINGS

    @staticmethod
    def view_file_name(view: str) -> str:
        return f"{view}.npy"

    def view_file(self, view: str) -> Path:
        return self.path / self.view_file_name(view)

    def read_manifest(self) -> dict[str, Any]:
        return read_json(self.manifest)

    def read_settings(self) -> dict[str, Any]:
        """The saved ``embed_config.yaml`` ({} when absent)."""
        import yaml

        return (yaml.safe_load(self.settings.read_text(encoding="utf-8")) or {}) if self.settings.is_file() else {}


class CodesFolder:
    """``<dataset>/codes/<name>/`` written by ``semrec codes``."""

    CODES = "codes.npy"
    TOKENIZER = "tokenizer"
    MANIFEST = "codes.json"
    REPORT = "report.json"
    CONFIG = "codes_config.yaml"

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def codes(self) -> Path:
        """int64 ``[N+1, levels]``, row 0 = -1 padding."""
        return self.path / self.CODES

    @property
    def tokenizer(self) -> Path:
        """The fitted tokenizer's folder."""
        return self.path / self.TOKENIZER

    @property
    def manifest(self) -> Path:
        return self.path / self.MANIFEST

    @property
    def report(self) -> Path:
        return self.path / self.REPORT

    @property
    def config(self) -> Path:
        return self.path / self.CONFIG

    def exists(self) -> bool:
        """Whether codes were written here."""
        return self.codes.is_file()

    def read_manifest(self) -> dict[str, Any]:
        """``codes.json`` (what the codes were made from); SemrecError naming it when missing."""
        return read_json(require_artifact(self.manifest, "codes", CODES_FIX))

    def embeddings_model(self) -> str:
        """The text encoder whose embeddings the tokenizer was fitted on."""
        return self.read_manifest()["embeddings"]["model"]

    def is_current(self, dataset: DatasetFolder) -> bool:
        """Whether codes exist and were fitted on ``dataset`` as it is now (its manifest's sha256)."""
        return (self.manifest.is_file() and dataset.exists()
                and read_json(self.manifest).get("dataset_manifest_sha256") == dataset.manifest_sha256())


CTR_FIX = "re-run 'semrec ctr-data' to rebuild it"


class CtrFolder:
    """``<dataset>/ctr/<name>/`` written by ``semrec ctr-data``: ``samples.parquet`` (:class:`semrec.data.ctr.
    CtrSamples`), ``ctr.json`` (settings, counts, the dataset manifest's sha256), ``ctr_config.yaml``."""

    SAMPLES = "samples.parquet"
    MANIFEST = "ctr.json"
    CONFIG = "ctr_config.yaml"

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def samples(self) -> Path:
        return self.path / self.SAMPLES

    @property
    def manifest(self) -> Path:
        return self.path / self.MANIFEST

    @property
    def config(self) -> Path:
        return self.path / self.CONFIG

    def exists(self) -> bool:
        return self.samples.is_file() and self.manifest.is_file()

    def read_manifest(self) -> dict[str, Any]:
        return read_json(require_artifact(self.manifest, "CTR samples", CTR_FIX))

    def is_current(self, dataset: DatasetFolder) -> bool:
        """Whether the samples exist and were built from ``dataset`` as it is now (its manifest's sha256)."""
        return (self.exists() and dataset.exists()
                and read_json(self.manifest).get("dataset_manifest_sha256") == dataset.manifest_sha256())


class RunFolder:
    """A training run's folder (``semrec train --out``)."""

    CONFIG = "config.yaml"
    FINGERPRINTS = "fingerprints.json"
    METRICS = "metrics.jsonl"
    RESULTS = "results.json"
    CHECKPOINTS = "checkpoints"
    TENSORBOARD = "tb"
    CURVE = "curve.png"
    COLD_ITEMS = "cold_items.npz"

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __str__(self) -> str:
        return str(self.path)

    @staticmethod
    def default_path(dataset: str | Path, model: str, root: str | Path = "runs") -> Path:
        """Where a run goes when no ``--out`` is given: ``<root>/<dataset name>-<model>-<YYYYmmdd-HHMMSS>``."""
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        return Path(root) / f"{Path(dataset).name}-{model}-{stamp}"

    @property
    def config(self) -> Path:
        return self.path / self.CONFIG

    @property
    def fingerprints(self) -> Path:
        return self.path / self.FINGERPRINTS

    @property
    def metrics(self) -> Path:
        return self.path / self.METRICS

    @property
    def results(self) -> Path:
        return self.path / self.RESULTS

    @property
    def checkpoints(self) -> Path:
        return self.path / self.CHECKPOINTS

    @property
    def tensorboard(self) -> Path:
        return self.path / self.TENSORBOARD

    @property
    def curve(self) -> Path:
        return self.path / self.CURVE

    @property
    def cold_items(self) -> Path:
        return self.path / self.COLD_ITEMS

    def checkpoint_file(self, which: str) -> Path:
        """``checkpoints/<which>.pt`` (``best`` or ``last``), whether or not it exists."""
        return self.checkpoints / f"{which}.pt"

    @property
    def last(self) -> Path:
        return self.checkpoint_file("last")

    @property
    def best(self) -> Path:
        return self.checkpoint_file("best")

    def has_started(self) -> bool:
        """Whether a training epoch was checkpointed here (the run can be resumed)."""
        return self.last.is_file()

    def is_finished(self) -> bool:
        """Whether training ended and wrote ``results.json``."""
        return self.results.is_file()

    def checkpoint(self, which: str = "best") -> Path:
        """``checkpoints/<which>.pt``; :class:`MissingCheckpoint` (saying why it may be missing) when absent."""
        path = self.checkpoint_file(which)
        if path.is_file():
            return path
        if self.last.is_file():
            hint = (f"the run was interrupted before its first validation (or the file was removed); finish it with "
                    f"'semrec train --resume {self.path}', or evaluate its last epoch with 'semrec evaluate "
                    f"{self.path} --checkpoint last'")
        else:
            hint = ("the run never finished an epoch (or its checkpoints were removed), so there is nothing to resume "
                    "or use; train it again without --resume")
        raise MissingCheckpoint(f"{path}: missing (incomplete run folder); {hint}")

    def read_config_dict(self) -> dict[str, Any]:
        """The saved ``config.yaml`` as a mapping; SemrecError when the folder is not a run or the file is bad."""
        import yaml

        if not self.config.is_file():
            raise SemrecError(f"{self.path}: not a run folder (no config.yaml)")
        try:
            data = yaml.safe_load(self.config.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise SemrecError(f"{self.config}: not valid YAML ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise SemrecError(f"{self.config}: not a run config (expected a mapping, got {type(data).__name__})")
        return data

    def read_results(self) -> dict[str, Any] | None:
        """``results.json`` of a finished run, None when training has not finished."""
        return json.loads(self.results.read_text(encoding="utf-8")) if self.results.is_file() else None

    def write_results(self, results: dict[str, Any]) -> None:
        write_json(self.results, results)

    def read_metrics(self) -> list[dict[str, Any]]:
        """The per-epoch rows of ``metrics.jsonl`` ([] when absent)."""
        if not self.metrics.is_file():
            return []
        return [json.loads(line) for line in self.metrics.read_text(encoding="utf-8").splitlines() if line.strip()]

    def write_metrics(self, rows: list[dict[str, Any]]) -> None:
        """Write ``metrics.jsonl`` (atomically), one JSON object per line."""
        from semrec.io import atomic_path

        with atomic_path(self.metrics) as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
