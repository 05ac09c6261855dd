"""The HTTP API: a FastAPI app built by :func:`create_app` from a :class:`Recommender` (no global state).

``POST /recommend`` (one history or a batch), ``POST /items`` (cold-start items), ``GET /items/{raw_id}``,
``GET /health``; OpenAPI at ``/docs`` and ``/openapi.json``. Requests are validated against the limits below
(422 with the offending field); errors of the request's content are 400 (bad input), 404 (unknown item) or 409
(raw id already in the catalogue, or an ID-only model asked to add items); 503 when the text encoder cannot be
loaded, or is still loading. Nothing is loaded inside a request: :func:`create_app` starts
:meth:`Recommender.warm_up` (tokenizer, text encoder, one scoring pass) on a background thread, ``GET /health``
says ``"loading"`` until it is done (then ``"ok"``, or ``"degraded"`` with the reason), and ``POST /items`` answers
503 with ``Retry-After`` meanwhile; ``/recommend`` and ``GET /items`` are served at once. Endpoints are
synchronous: FastAPI runs them on its thread pool, and the recommender's readers-writer lock keeps concurrent
recommendations safe while items are being added. Serve one process per run folder (the
catalogue lives in memory; several workers would not see each other's additions).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Annotated, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from semrec import __version__
from semrec.errors import SemrecError
from semrec.serve.items import ColdStartUnsupported, EncoderUnavailable
from semrec.serve.recommender import Recommender
from semrec.serve.types import ItemConflict, UnknownItem

MAX_HISTORY = 1000  # raw ids per history (the model reads the last max_len; all are excluded from the results)
MAX_BATCH = 256  # histories per request
MAX_K = 1000
MAX_ITEMS = 100  # items per POST /items
MAX_FIELDS = 32  # text fields per item
MAX_TEXT = 20_000  # characters per text field
MAX_RAW_ID = 256

RawId = Annotated[str, Field(min_length=1, max_length=MAX_RAW_ID)]
History = Annotated[list[RawId], Field(max_length=MAX_HISTORY, description="Raw item ids, oldest first.")]
Text = Annotated[str, Field(max_length=MAX_TEXT)]


class RecommendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"history": ["i1", "i2"], "k": 10}]})
    history: History | None = Field(None, description="One history (give this or 'histories').")
    histories: Annotated[list[History], Field(min_length=1, max_length=MAX_BATCH)] | None = Field(
        None, description="Several histories, scored in one batch (give this or 'history').")
    k: int = Field(10, ge=1, le=MAX_K, description="Items to return per history.")
    exclude_seen: bool = Field(True, description="Never recommend an item of the history.")

    @model_validator(mode="after")
    def _one_of(self) -> RecommendRequest:
        if (self.history is None) == (self.histories is None):
            raise ValueError("give exactly one of 'history' (one list of raw ids) or 'histories' (a list of lists)")
        return self


class ScoredItemOut(BaseModel):
    raw_id: str
    score: float
    title: str | None = None


class RecommendationOut(BaseModel):
    items: list[ScoredItemOut]
    unknown: list[str] = Field(description="History ids not in the catalogue (ignored).")
    history_used: int = Field(description="Known history items the model read (the most recent ones).")
    fallback: str | None = Field(None, description="'popularity' when no history item is known.")


class RecommendResponse(BaseModel):
    results: list[RecommendationOut] = Field(description="One entry per history, in request order.")


class ItemIn(BaseModel):
    """A new item: ``raw_id`` plus one text per dataset view (e.g. title, brand, categories, description)."""

    model_config = ConfigDict(extra="allow", json_schema_extra={
        "maxProperties": MAX_FIELDS + 1, "examples": [{"raw_id": "B0NEW", "title": "Digital caliper", "brand": "X"}]})
    __pydantic_extra__: dict[str, Text] = Field(init=False)
    raw_id: RawId

    @model_validator(mode="after")
    def _few_fields(self) -> ItemIn:
        if len(self.__pydantic_extra__ or {}) > MAX_FIELDS:
            raise ValueError(f"at most {MAX_FIELDS} text fields per item")
        return self


class AddItemsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: Annotated[list[ItemIn], Field(min_length=1, max_length=MAX_ITEMS)]


class AddedItem(BaseModel):
    raw_id: str
    item_id: int
    codes: list[int] | None = None


class AddItemsResponse(BaseModel):
    added: list[AddedItem]
    n_items: int


class ItemOut(BaseModel):
    raw_id: str
    cold_start: bool = Field(description="Added after training through POST /items.")
    texts: dict[str, str]
    added_at: str | None = None


class Health(BaseModel):
    status: str = Field(description="'loading' while the start-up warm-up runs (POST /items answers 503 until it is "
                                    "done), 'ok' when every route is ready, 'degraded' when items cannot be added "
                                    "(see 'detail').")
    detail: str | None = Field(None, description="Why the status is 'degraded'.")
    warmup_seconds: float | None = Field(None, description="How long the start-up warm-up took (null while loading).")
    model: str
    dataset: str
    n_items: int
    n_cold_items: int
    similarity: str
    retrieval: str
    cold_start: bool = Field(description="Whether this model can add items (POST /items).")


class ErrorOut(BaseModel):
    detail: str


class NotReady(SemrecError):
    """A route whose start-up loading has not finished (503, with Retry-After)."""


STATUS = ((UnknownItem, 404), (ItemConflict, 409), (ColdStartUnsupported, 409), (EncoderUnavailable, 503),
          (NotReady, 503))
RETRY_AFTER_S = 5
log = logging.getLogger("uvicorn.error")


def _status(exc: SemrecError) -> int:
    return next((code for cls, code in STATUS if isinstance(exc, cls)), 400)


class Readiness:
    """The start-up warm-up of a served :class:`Recommender` (:meth:`Recommender.warm_up`), on a daemon thread
    started at construction (``run=False``: nothing to warm, ready at once). ``status`` is 'loading', then 'ok',
    or 'degraded' (``detail`` says why) when the warm-up failed."""

    def __init__(self, rec: Recommender, run: bool = True):
        self.status, self.detail, self.seconds = ("loading" if run else "ok"), None, None
        self._done = threading.Event()
        if run:
            threading.Thread(target=self._run, args=(rec,), name="semrec-warm-up", daemon=True).start()
        else:
            self._done.set()

    def _run(self, rec: Recommender) -> None:
        start = time.perf_counter()
        try:
            rec.warm_up()
            self.status = "ok"
        except Exception as exc:  # noqa: BLE001 - any failure is reported by /health and POST /items, not lost
            reason = str(exc) if isinstance(exc, SemrecError) else f"{type(exc).__name__}: {exc}"
            self.status, self.detail = "degraded", f"items cannot be added: {reason}"
        finally:
            self.seconds = round(time.perf_counter() - start, 3)
            self._done.set()
        if self.status == "ok":
            log.info("semrec: ready (start-up loading took %.1f s)", self.seconds)
        else:
            log.error("semrec: %s", self.detail)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the warm-up is over (True) or ``timeout`` seconds have passed (False)."""
        return self._done.wait(timeout)

    def check(self) -> None:
        """Raise :class:`NotReady` unless the warm-up succeeded."""
        if self.status == "loading":
            raise NotReady("the server is still loading the text encoder (start-up); retry in a few seconds")
        if self.status != "ok":
            raise NotReady(self.detail or "not ready")


def create_app(rec: Recommender, warm_up: bool = True) -> FastAPI:
    """A FastAPI app serving ``rec`` (kept in ``app.state.recommender``). With ``warm_up`` (the default) what the
    routes need is loaded now, on a background thread (``app.state.readiness``, a :class:`Readiness`); without
    it, the first ``POST /items`` loads the text encoder itself."""
    app = FastAPI(title="semrec", version=__version__,
                  description=f"Next-item recommendations of run `{rec.run_dir}` ({rec.config.model} on "
                              f"{rec.dataset.name}).")
    app.state.recommender = rec
    readiness = Readiness(rec, run=warm_up)
    app.state.readiness = readiness
    errors = {code: {"model": ErrorOut} for code in (400, 404, 409, 503)}

    @app.exception_handler(SemrecError)
    def _semrec_error(request: Request, exc: SemrecError) -> JSONResponse:
        headers = {"Retry-After": str(RETRY_AFTER_S)} if isinstance(exc, NotReady) and readiness.status == "loading" \
            else None
        return JSONResponse(status_code=_status(exc), content={"detail": str(exc)}, headers=headers)

    @app.get("/health", response_model=Health)
    def health() -> dict[str, Any]:
        """Liveness, readiness ('loading' | 'ok' | 'degraded') and what is being served."""
        return {"status": readiness.status, "detail": readiness.detail, "warmup_seconds": readiness.seconds,
                **rec.info()}

    @app.post("/recommend", response_model=RecommendResponse, responses={400: errors[400]})
    def recommend(body: RecommendRequest) -> dict[str, Any]:
        """Top-k raw item ids with scores for one history or a batch of histories (raw ids, oldest first)."""
        histories = [body.history] if body.history is not None else body.histories
        results = rec.recommend_batch(histories, k=body.k, exclude_seen=body.exclude_seen)
        return {"results": [{"items": [vars(i) for i in r.items], "unknown": r.unknown,
                             "history_used": r.history_used, "fallback": r.fallback} for r in results]}

    @app.post("/items", status_code=201, response_model=AddItemsResponse,
              responses={c: errors[c] for c in (400, 409, 503)})
    def add_items(body: AddItemsRequest) -> dict[str, Any]:
        """Add cold-start items (rankable at once, no retraining; saved in the run folder). Models that read
        only item ids refuse with 409."""
        if rec.cold_start_refusal:
            raise ColdStartUnsupported(rec.cold_start_refusal)
        readiness.check()
        items = [{"raw_id": i.raw_id, **(i.__pydantic_extra__ or {})} for i in body.items]
        added = rec.add_items(items)
        return {"added": added, "n_items": rec.n_items}

    @app.get("/items/{raw_id:path}", response_model=ItemOut, responses={404: errors[404]})
    def get_item(raw_id: str) -> dict[str, Any]:
        """An item's texts and whether it was added after training."""
        return rec.item(raw_id)

    app.openapi()  # the schema of /docs and /openapi.json is built now, not by the first request
    return app


def serve(rec: Recommender, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Serve ``rec`` with uvicorn until interrupted (one process: the catalogue is in memory)."""
    import uvicorn

    uvicorn.run(create_app(rec), host=host, port=port, log_level=log_level)


class ServerThread:
    """Run an app with uvicorn on a background thread on a free port (``with ServerThread(app) as s: s.url``).
    With ``wait_ready`` the block starts once the app's start-up warm-up is over (tests, benchmarks)."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning",
                 wait_ready: bool = True):
        import uvicorn

        self.app, self.wait_ready = app, wait_ready
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.host, self.port = host, self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=5))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        readiness = getattr(self.app.state, "readiness", None)
        if self.wait_ready and readiness is not None and not readiness.wait(600):
            raise RuntimeError("the app's start-up loading did not finish in 10 minutes")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.sock.close()
