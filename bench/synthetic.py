"""A synthetic catalogue with text for the growth curves (issue 20): Amazon-Reviews-2023-style files that
``semrec prepare`` reads like the real ones.

Items belong to latent topics (``--topics``); a topic owns a few words of a vocabulary, a category path and a set of
brands, from which each item's title, brand, categories, features and description are composed (so the text says
something about the topic, as real metadata does). Users walk a topic chain: each user starts at a random topic and
at every step stays (probability ``--stay``) or moves to one of the topic's ``--neighbours`` neighbouring topics,
then picks an item of the current topic by a Zipf law over the topic's items. Sequence lengths are 5 + a geometric
count (mean ``--mean-length``), the 5-core of the published files. Timestamps increase along each sequence.

Files (under ``OUT``): ``Synthetic.csv.gz`` (``user_id,parent_asin,rating,timestamp``, the rating-only layout) and
``meta_Synthetic.jsonl.gz`` (``parent_asin, title, details.Brand, features, categories, description``). Both are
written in chunks of users / items, so memory does not grow with the output (10^7 interactions: tested in
``bench/scale.py``). A repeat of an item inside one sequence is possible, as in real logs; ``prepare`` drops it.
With ``--layout splits`` the same sequences are written as the ``last_out_w_his`` files instead
(``Synthetic.train/valid/test.csv.gz``, header ``user_id,parent_asin,rating,timestamp,history``; repeats dropped
by the published rule, every row carrying the user's items before it).

    python bench/synthetic.py /tmp/syn --items 100000 --users 300000
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

import numpy as np

WORDS = ("alpha amber arc atlas aurora axis basin beacon birch bolt breeze bronze canyon cedar cipher cobalt comet "
         "coral crest crystal delta dune echo ember fern flint forge frost garnet glacier granite harbor hazel "
         "horizon indigo iris ivory jade jasper juniper kelp lagoon lantern lotus lunar maple marble meadow mesa "
         "mist nebula nova oak onyx opal orbit pebble pine pixel prism quartz quill raven reef ridge river "
         "saffron sage sierra slate solar spruce summit tango terra thistle tidal topaz torch tundra umber vale "
         "velvet vertex willow zephyr zinc").split()
NOUNS = ("adapter bag battery beaker bottle brush cable case charger clip cover cup desk filter flask gauge glove "
         "holder jar kit lamp lens magnet marker meter mount notebook pad pen probe pump rack ruler scale sensor "
         "sheet stand strap tape timer tool tray tube valve").split()


def topic_words(topics: int, rng: np.random.Generator) -> np.ndarray:
    """``[topics, 3]`` word ids: the words a topic's items are described with."""
    return rng.integers(0, len(WORDS), size=(topics, 3))


def generate(out: str | Path, n_items: int, n_users: int, topics: int = 200, mean_length: float = 8.0,
             stay: float = 0.7, neighbours: int = 3, seed: int = 0, chunk: int = 50_000,
             layout: str = "ratings") -> dict[str, int]:
    """Write the metadata and the interactions (``layout``: ``ratings``, one rating-only CSV, or ``splits``, the
    ``last_out_w_his`` files of the same sequences); returns ``{"items", "users", "interactions"}`` (interactions
    before repeats are dropped). ValueError on sizes below 1, more topics than items, ``stay`` outside [0, 1] or
    an unknown layout."""
    if n_items < 1 or n_users < 1 or not 1 <= topics <= n_items or not 0 <= stay <= 1 or neighbours < 1:
        raise ValueError("need items, users >= 1, 1 <= topics <= items, 0 <= stay <= 1 and neighbours >= 1")
    if layout not in ("ratings", "splits"):
        raise ValueError(f"layout must be ratings or splits, got {layout!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    item_topic = rng.integers(0, topics, size=n_items)
    order = np.argsort(item_topic, kind="stable")  # items grouped by topic
    starts = np.searchsorted(item_topic[order], np.arange(topics + 1))
    sizes = np.diff(starts)
    words = topic_words(topics, rng)
    brands = rng.integers(0, max(1, topics // 2) * 4, size=(topics, 4))
    neighbour = (np.arange(topics)[:, None] + rng.integers(1, max(2, topics), size=(topics, neighbours))) % topics

    tmp_meta = out / "meta_Synthetic.jsonl.gz.tmp"
    with gzip.open(tmp_meta, "wt", encoding="utf-8", compresslevel=1) as f:
        # per-item draws made once (O(items) memory, as item_topic): the output does not depend on ``chunk``
        nouns = rng.integers(0, len(NOUNS), size=n_items)
        first = rng.integers(0, 3, size=n_items)
        picks = np.stack([first, (first + 1 + rng.integers(0, 2, size=n_items)) % 3], axis=1)  # two distinct words
        brand_of = rng.integers(0, 4, size=n_items)
        for lo in range(0, n_items, chunk):
            hi = min(n_items, lo + chunk)
            noun, pick, brand = nouns[lo:hi], picks[lo:hi], brand_of[lo:hi]
            for j, item in enumerate(range(lo, hi)):
                t = item_topic[item]
                w = [WORDS[words[t, k]] for k in pick[j]]
                f.write(json.dumps({
                    "parent_asin": f"P{item:08d}",
                    "title": f"{w[0].title()} {w[1]} {NOUNS[noun[j]]} {item % 97}",
                    "details": {"Brand": f"Brand{brands[t, brand[j]]}"},
                    "features": [f"{WORDS[words[t, 2]]} finish", f"size {item % 7 + 1}"],
                    "categories": ["Synthetic", f"Group {t % 20}", f"Topic {t}"],
                    "description": [f"A {w[0]} {NOUNS[noun[j]]} for {WORDS[words[t, 1]]} work."],
                }) + "\n")
    tmp_meta.replace(out / "meta_Synthetic.jsonl.gz")

    zipf = [None] * topics  # per topic: cumulative Zipf(1) weights over its items
    total = 0
    splits = ("train", "valid", "test")
    names = ["Synthetic.csv.gz"] if layout == "ratings" else [f"Synthetic.{s}.csv.gz" for s in splits]
    tmps = [out / f"{name}.tmp" for name in names]
    files = [gzip.open(tmp, "wt", encoding="utf-8", compresslevel=1) for tmp in tmps]
    try:
        header = "user_id,parent_asin,rating,timestamp" + ("" if layout == "ratings" else ",history")
        for f in files:
            f.write(header + "\n")
        for lo in range(0, n_users, chunk):
            hi = min(n_users, lo + chunk)
            lines: list[list[str]] = [[] for _ in files]
            for u in range(lo, hi):
                rng = np.random.default_rng([seed, 2, u])  # one stream per user: independent of ``chunk``
                length = 4 + int(rng.geometric(1 / max(mean_length - 4, 1.0)))
                t = int(rng.integers(0, topics))
                moves = rng.random(length) >= stay
                hops = rng.integers(0, neighbours, size=length)
                draws = rng.random(length)
                clock = 1_600_000_000 + int(rng.integers(0, 10_000_000))
                walk = []
                for step in range(length):
                    if moves[step]:
                        t = int(neighbour[t, hops[step]])
                    if sizes[t] == 0:
                        t = int(item_topic[rng.integers(0, n_items)])
                    if zipf[t] is None:
                        weights = 1.0 / np.arange(1, sizes[t] + 1)
                        zipf[t] = np.cumsum(weights) / weights.sum()
                    item = order[starts[t] + min(int(np.searchsorted(zipf[t], draws[step])), sizes[t] - 1)]
                    clock += 3600 + step
                    walk.append((f"P{item:08d}", clock))
                total += len(walk)
                if layout == "ratings":
                    lines[0].extend(f"U{u:08d},{item},5.0,{clock}\n" for item, clock in walk)
                    continue
                seen: set[str] = set()  # the published rule: repeats dropped (first kept), time order
                walk = [(item, clock) for item, clock in walk if not (item in seen or seen.add(item))]
                n = len(walk)
                for i, (item, clock) in enumerate(walk):
                    split = 2 if n >= 3 and i == n - 1 else 1 if n >= 3 and i == n - 2 else 0
                    history = " ".join(x for x, _ in walk[:i])
                    lines[split].append(f"U{u:08d},{item},5.0,{clock},{history}\n")
            for f, chunk_lines in zip(files, lines):
                f.write("".join(chunk_lines))
    finally:
        for f in files:
            f.close()
    for tmp, name in zip(tmps, names):
        tmp.replace(out / name)
    return {"items": n_items, "users": n_users, "interactions": total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="folder for Synthetic.csv.gz and meta_Synthetic.jsonl.gz")
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--users", type=int, default=None, help="default: 3 per item")
    parser.add_argument("--topics", type=int, default=None, help="default: items / 50, at least 1")
    parser.add_argument("--mean-length", type=float, default=8.0)
    parser.add_argument("--stay", type=float, default=0.7)
    parser.add_argument("--neighbours", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--layout", choices=["ratings", "splits"], default="ratings",
                        help="ratings: Synthetic.csv.gz (rating-only); splits: Synthetic.train/valid/test.csv.gz "
                             "(last_out_w_his: every row carries the user's history before it)")
    args = parser.parse_args()
    users = args.users if args.users is not None else 3 * args.items
    topics = args.topics if args.topics is not None else max(1, args.items // 50)
    try:
        counts = generate(args.out, args.items, users, topics, args.mean_length, args.stay, args.neighbours,
                          args.seed, layout=args.layout)
    except ValueError as exc:
        parser.error(str(exc))
    print(f"wrote {args.out}: {counts['items']:,} items, {counts['users']:,} users, "
          f"{counts['interactions']:,} interactions")


if __name__ == "__main__":
    main()
