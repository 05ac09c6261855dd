"""Bit-identical results of a tiny SASRec and a tiny CCFRec run, recorded before the structural refactor of issue 17
(``tests/golden/tiny_runs.json``): training, evaluation, serving and cold start must give exactly these numbers after
code moves. ``SEMREC_UPDATE_GOLDEN=1 pytest tests/test_golden_runs.py`` rewrites the file (only for a change that is
meant to alter results: say so in the commit)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.support import fake_encode, train_tiny_ccfrec, train_tiny_sasrec

GOLDEN = Path(__file__).parent / "golden" / "tiny_runs.json"


def _observed(base: Path) -> dict:
    from semrec.runs import evaluate_run
    from semrec.serve import Recommender

    out: dict = {}
    sasrec_run, sasrec = train_tiny_sasrec(base / "s")
    _, ccfrec_run = train_tiny_ccfrec(base / "c")
    ccfrec = json.loads((ccfrec_run / "results.json").read_text(encoding="utf-8"))
    for name, run, res in (("sasrec", sasrec_run, sasrec), ("ccfrec", ccfrec_run, ccfrec)):
        rec = Recommender.load(run, encoder=fake_encode)
        history = rec.user_history(rec.dataset.users["raw_id"].iloc[0])
        top = rec.recommend(history, k=5)
        out[name] = {
            "valid": res["valid"], "test": res["test"], "best_epoch": res["best_epoch"],
            "test_exclude_history": evaluate_run(run, exclude_history=True, device="cpu")["test"],
            "top5": [[item.raw_id, item.score] for item in top.items],
        }
    rec = Recommender.load(ccfrec_run, encoder=fake_encode)
    added = rec.add_items([{"raw_id": "NEW1", "title": "a brand new item", "brand": "brand 3."}])
    out["ccfrec"]["cold_start"] = {"added": [a["raw_id"] for a in added],
                                   "top5": [[i.raw_id, i.score] for i in rec.recommend(["i3", "i4"], k=5).items]}
    return out


def test_tiny_runs_give_the_recorded_numbers(tmp_path):
    observed = json.loads(json.dumps(_observed(tmp_path)))  # through JSON, as recorded
    if os.environ.get("SEMREC_UPDATE_GOLDEN") == "1":
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(observed, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        pytest.skip(f"rewrote {GOLDEN}")
    assert GOLDEN.is_file(), f"{GOLDEN} missing: run with SEMREC_UPDATE_GOLDEN=1 once"
    assert observed == json.loads(GOLDEN.read_text(encoding="utf-8"))
