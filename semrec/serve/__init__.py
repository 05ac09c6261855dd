"""Inference and serving: :class:`Recommender` (a run folder as an object), cold-start items, faiss export and
the FastAPI app (``semrec recommend | export | serve``)."""

from semrec.serve.items import ColdStartUnsupported, EncoderUnavailable
from semrec.serve.recommender import Recommender
from semrec.serve.types import ItemConflict, Recommendation, ScoredItem, UnknownItem

__all__ = ["ColdStartUnsupported", "EncoderUnavailable", "ItemConflict", "Recommendation", "Recommender",
           "ScoredItem", "UnknownItem"]
