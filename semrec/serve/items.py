"""Cold-start items: from raw metadata to the item data a text/code model reads, and on to its item vectors.

A new item goes through the steps the catalogue went through, with the run's own artefacts:

1. texts: each view cleaned as the dataset sources clean it (``clean_title`` for ``title``, ``clean_text`` for
   the other views); the derived view ``all`` joins the non-empty views with a space, in the dataset's view
   order (``CanonicalDataset.view_texts``);
2. vectors: the views the model reads are encoded by the run's text encoder (the model named in the codes
   folder's ``codes.json`` for code models, ``RunConfig.text_model`` for UniSRec) with the settings saved in
   ``embed_config.yaml`` next to the dataset's embeddings;
3. item data: :func:`semrec.models.inputs.item_features`, as for the catalogue (codes from the fitted tokenizer's
   ``encode``, CCFRec's PCA text vectors, UniSRec's raw text vectors);
4. item vectors: a model is built from the new items' data alone (:func:`semrec.models.inputs.build_item_inputs`
   of ``n`` items), the trained parameters are loaded into it, and its ``eval_tables()`` give the rows. This is the
   model's own code path, so a cold item's vector is what the model computes had the item been in the catalogue;
   it is valid because, for the models that read item data, an item's vectors are a pure function of its data and
   the parameters (no parameter is sized by the number of items: checked when the parameters are loaded).

Models that cannot are refused with the reason :func:`semrec.models.cold_start_refusal` gives (ID-only models, and
UniSRec ``transductive``, which adds a learned ID embedding per item).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from semrec.artifacts import DatasetFolder, RunFolder
from semrec.config import RunConfig
from semrec.data.dataset import ALL_VIEW, CanonicalDataset
from semrec.errors import SemrecError
from semrec.io import atomic_path
from semrec.models import build_model, model_entry
from semrec.models.inputs import ITEM_DATA, build_item_inputs, item_features
from semrec.text.clean import clean_text, clean_title
from semrec.text.encode import TextEncoder, load_view_embeddings

Encoder = Callable[[list[str]], np.ndarray]  # texts -> L2-normalised float32 [n, dim]


class ColdStartUnsupported(SemrecError):
    """The run's model cannot rank an item it was not trained with."""


class EncoderUnavailable(SemrecError):
    """The run's text encoder cannot be loaded (a server-side problem, not the request's)."""


def clean_item(item: Mapping[str, Any], views: list[str]) -> tuple[str, dict[str, str]]:
    """(raw id, cleaned text per dataset view) of one item given as ``{raw_id, view: text, ...}``.

    Text values may be strings, lists of strings (joined as the sources join them) or None. Unknown keys are
    errors (a misspelt view would silently give the item an empty text)."""
    if not isinstance(item, Mapping):
        raise SemrecError(f"an item must be a mapping with 'raw_id' and text fields, got {type(item).__name__}")
    raw = item.get("raw_id")
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = str(raw)
    if not isinstance(raw, str) or not raw.strip():
        raise SemrecError(f"every item needs a non-empty string 'raw_id', got {raw!r}")
    unknown = sorted(k for k in item if k != "raw_id" and k not in views)
    if unknown:
        raise SemrecError(f"item {raw!r}: unknown field(s) {', '.join(map(repr, unknown))} (this dataset's text "
                          f"views: {', '.join(views)})")
    texts = {}
    for view in views:
        value = item.get(view)
        if isinstance(value, (list, tuple)):
            bad = [v for v in value if not isinstance(v, str)]
        else:
            bad = [] if value is None or isinstance(value, str) else [value]
        if bad:
            raise SemrecError(f"item {raw!r}: field '{view}' must be text (a string or a list of strings)")
        texts[view] = clean_title(value) if view == "title" else clean_text(value)
    return raw, texts


def view_text(texts: Mapping[str, str], view: str, views: list[str]) -> str:
    """The text of ``view`` for one item; ``all`` joins the non-empty views as ``CanonicalDataset.view_texts``."""
    if view == ALL_VIEW:
        return " ".join(t for t in (texts.get(v, "") for v in views) if t)
    return texts.get(view, "")


def run_text_encoder(model_name: str, dataset_dir: str | Path, device: str | None = "cpu") -> Encoder:
    """The sentence-transformers encoder that made the dataset's embeddings, with their saved settings (the model
    loads on the first call: a server calls ``Recommender.warm_up`` at start-up so that no request pays it)."""
    settings = DatasetFolder(dataset_dir).embeddings(model_name).read_settings()
    encoder = TextEncoder(model_name, device=device, batch_size=int(settings.get("batch_size") or 64),
                          max_seq_length=settings.get("max_seq_length"))
    return lambda texts: encoder.encode(texts, progress=False)


class ItemFeaturizer:
    """Turns cleaned item texts into the item data the run's model reads (``codes``, ``text``, ``plm``)."""

    def __init__(self, config: RunConfig, dataset: CanonicalDataset, tokenizer: Any | None,
                 encoder: Encoder | Any | None = None, device: str | None = "cpu"):
        self.needs = model_entry(config.model).needs
        self.views = dataset.views
        self.tokenizer = tokenizer
        if model_entry(config.model).reads_codes_folder:
            self.embed_model = DatasetFolder(config.dataset).codes(config.codes).embeddings_model()
            self.embed_views = list(tokenizer.input_views)
        else:
            self.embed_model, self.embed_views = config.text_model, [config.text_view]
        self.text_view = config.text_view
        self.dataset_dir = Path(config.dataset)
        self._dataset = dataset
        self._catalogue: dict[str, tuple[np.ndarray, dict[str, int]]] | None = None
        if encoder is None:
            encoder = run_text_encoder(self.embed_model, config.dataset, device)
        self.encoder: Encoder = encoder.encode if hasattr(encoder, "encode") else encoder
        self.loaded = False  # True after the first successful encoding (the encoder's model is in memory)

    def check_readable(self, raw_id: str, texts: Mapping[str, str]) -> None:
        """Refuse an item with no text in any view the model reads (it would be a vector of the empty string)."""
        if not any(view_text(texts, v, self.views) for v in self.embed_views):
            raise SemrecError(f"item {raw_id!r} has no text in the view(s) this model reads "
                              f"({', '.join(self.embed_views)}); give at least one of: "
                              f"{', '.join(self.views if ALL_VIEW in self.embed_views else self.embed_views)}")

    def load_encoder(self) -> None:
        """Load the text encoder's model now (one probe text), so that no request pays for it."""
        try:
            vectors = np.asarray(self.encoder(["semrec warm-up probe"]), dtype=np.float32)
        except SemrecError as exc:
            raise EncoderUnavailable(str(exc)) from None
        if vectors.ndim != 2 or len(vectors) != 1:
            raise EncoderUnavailable(f"the text encoder returned shape {vectors.shape} for 1 text")
        self.loaded = True

    def catalogue(self) -> dict[str, tuple[np.ndarray, dict[str, int]]]:
        """Per view: the catalogue's embedding matrix (memory-mapped) and text -> row of each distinct text."""
        if self._catalogue is None:
            matrices = load_view_embeddings(DatasetFolder(self.dataset_dir).embeddings(self.embed_model).path,
                                            self.embed_views, mmap=True)
            self._catalogue = {}
            for view, matrix in matrices.items():
                rows: dict[str, int] = {}
                for row, text in enumerate(self._dataset.view_texts(view), 1):
                    rows.setdefault(text, row)
                self._catalogue[view] = (matrix, rows)
        return self._catalogue

    def encode(self, texts: list[Mapping[str, str]]) -> dict[str, np.ndarray]:
        """``{view: float32 [n, dim]}`` for the views the model reads, one encoder call for all of them.

        A text the catalogue already has gets the catalogue's own vector, not a fresh encoding: the encoder's
        floats depend slightly on the batch a text is in, and a near-tie could then give an item the same text as a
        catalogue item another code (issue 16, case 3). Only new texts reach the encoder."""
        catalogue = self.catalogue()
        n = len(texts)
        out = {}
        fresh: list[tuple[str, int, str]] = []  # (view, row in the request, text)
        for view in self.embed_views:
            matrix, rows = catalogue[view]
            out[view] = np.zeros((n, matrix.shape[1]), dtype=np.float32)
            for i, item in enumerate(texts):
                text = view_text(item, view, self.views)
                if text in rows:
                    out[view][i] = matrix[rows[text]]
                else:
                    fresh.append((view, i, text))
        if fresh:
            flat = [text for _, _, text in fresh]
            try:
                vectors = np.asarray(self.encoder(flat), dtype=np.float32)
            except SemrecError as exc:
                raise EncoderUnavailable(str(exc)) from None
            if vectors.ndim != 2 or len(vectors) != len(flat):
                raise EncoderUnavailable(f"the text encoder returned shape {vectors.shape} for {len(flat)} texts")
            for view in dict.fromkeys(view for view, _, _ in fresh):  # in the order of the views
                dim = catalogue[view][0].shape[1]
                if vectors.shape[1] != dim:
                    fitted = "the tokenizer was fitted on" if self.tokenizer is not None else "the run's vectors have"
                    raise SemrecError(f"view '{view}' has dim {vectors.shape[1]}, but {fitted} dim {dim}")
            for (view, i, _), vector in zip(fresh, vectors):
                out[view][i] = vector
        self.loaded = True
        return out

    def features(self, texts: list[Mapping[str, str]]) -> dict[str, np.ndarray]:
        """The model's item data of these items (no padding row), as the catalogue's
        (:func:`semrec.models.inputs.item_features`)."""
        return item_features(self.needs, self.encode(texts), self.tokenizer, self.text_view)


@torch.no_grad()
def item_vectors(config: RunConfig, state: Mapping[str, torch.Tensor], features: Mapping[str, np.ndarray],
                 codebook_sizes: list[int] | None,
                 device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor | None]:
    """(candidate rows, history rows or None) ``[n, d]`` of new items: the trained model's ``eval_tables()`` on a
    model built from these items' data only."""
    model = build_model(config.model, config.model_params, build_item_inputs(features, codebook_sizes))
    own = model.state_dict()
    loaded = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    sized = sorted(k for k in own if k not in loaded and k.split(".")[-1] not in ITEM_DATA)
    if sized:
        raise ColdStartUnsupported(f"{config.model}: parameters {', '.join(sized)} depend on the catalogue; "
                                   "a new item cannot be given vectors without retraining")
    model.load_state_dict(loaded, strict=False)
    model.to(device).eval()
    candidate, history = model.eval_tables()
    return candidate[1:], None if history is None else history[1:]


# ----- persistence in the run folder ----------------------------------------------------------------------

def save_cold_items(run_dir: str | Path, records: list[dict[str, Any]], features: Mapping[str, np.ndarray],
                    fingerprints: Mapping[str, str]) -> None:
    """Write every cold item (records + item data) to ``<run>/cold_items.npz`` in one atomic rename."""
    meta = json.dumps({"format": 1, "fingerprints": dict(fingerprints), "items": records}, ensure_ascii=False)
    with atomic_path(RunFolder(run_dir).cold_items) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, meta=np.array(meta), **{k: np.asarray(v) for k, v in features.items()})


def load_cold_items(run_dir: str | Path,
                    fingerprints: Mapping[str, str]) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """The cold items saved in a run folder ([] when none); refused when the dataset or codes changed since."""
    path = RunFolder(run_dir).cold_items
    if not path.is_file():
        return [], {}
    try:
        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(str(npz["meta"]))
            features = {k: npz[k] for k in npz.files if k != "meta"}
    except (OSError, ValueError, KeyError) as exc:
        raise SemrecError(f"{path}: cannot read the cold-start items ({type(exc).__name__}: {exc})") from None
    from semrec.train.run_folder import changed_fingerprints

    changed = changed_fingerprints(meta["fingerprints"], fingerprints)
    if changed:
        raise SemrecError(f"{path}: the items were added against another version of the run's "
                          f"{' and '.join(changed)}; move the file away (or re-add the items) to serve this run")
    return meta["items"], features
