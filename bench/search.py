"""Full-text search latency with 100,000 indexed documents in PostgreSQL.

Same setup as ``listing.py`` (fresh databases, ``medvault serve``, COPY-seeded
documents, no blobs), plus an index row per document: synthetic text of 80 words
drawn from a 5,000-word vocabulary with a Zipf distribution (s = 1.1), so the most
common word is in nearly every document and the rare ones in a few dozen. The index
is built the way ``search.index`` builds it: ``setweight(to_tsvector('english', ...))``
per field (title A, description B, file names C, content D), GIN index, ANALYZE.
The text goes to PostgreSQL only inside the seeding transaction (a temporary table),
as the vault's indexer passes it as a bound parameter.

Measured over HTTP, one keep-alive client, interleaved, after a warm-up:

* ``list_page_1``: the plain unfiltered list (the baseline, same run);
* ``common_page_1`` / ``common_page_N``: ``q=<most common word>``, first page and the
  page reached by walking ``next_cursor`` (default page 20);
* ``rare_page_1``: ``q=<a word in about 50 documents>``;
* ``pct1_page_1`` / ``pct10_page_1``: words in about 1 % and 10 % of the documents;
* ``two_words_page_1``: the two most common words (both must match).

A search ranks only the newest ``MEDVAULT_SEARCH_RANK_WINDOW`` (1,000) of the matching
documents (``search.query``); the JSON records, per scenario, whether the search
matched more than that (``older_matches_unranked``). The deep page (default 20, at 50
per page) is the last page of that window.

Snippets are computed from decrypted text in the vault; here no document has a text
artifact, so they come from the metadata and the numbers are the index's cost.

    .venv/bin/python bench/search.py                         # 100k docs, 100 reps
    .venv/bin/python bench/search.py --documents 5000 --reps 10   # smoke run
"""

from __future__ import annotations

import argparse
import os
import random
import time
from collections import Counter
from typing import Any

import httpx
import psycopg

from common import latency_summary_ms, machine_info, new_figure, save_figure, write_json
from listing import PG_URL, bench_databases, seed

NAME = "search"
P99_TARGET_MS = 50.0
PAGE = 50
VOCABULARY = 5000
WORDS_PER_DOC = 80
SYLLABLES = ("ka", "lo", "mi", "ne", "su", "ta", "ri", "po", "de", "vu", "ga", "ho", "zi")


def vocabulary(size: int, rng: random.Random) -> list[str]:
    """Distinct pronounceable words ending in a consonant (stemmers leave them alone)."""
    words: set[str] = set()
    while len(words) < size:
        count = rng.randint(2, 4)
        words.add("".join(rng.choice(SYLLABLES) for _ in range(count)) + rng.choice("mnrt"))
    return sorted(words)


def index_corpus(db: str, *, seed_value: int = 7) -> dict[str, Any]:
    """Give every document synthetic text and an index row; returns word frequencies."""
    rng = random.Random(seed_value)
    words = vocabulary(VOCABULARY, rng)
    weights = [1.0 / (rank**1.1) for rank in range(1, VOCABULARY + 1)]
    document_frequency: Counter[str] = Counter()
    started = time.perf_counter()
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{db}") as conn:
        ids = [row[0] for row in conn.execute("SELECT id FROM documents")]
        conn.execute("CREATE TEMP TABLE bench_text (document_id uuid, body text)")
        with conn.cursor() as cur, cur.copy("COPY bench_text FROM STDIN") as copy:
            for document_id in ids:
                drawn = rng.choices(words, weights=weights, k=WORDS_PER_DOC)
                document_frequency.update(set(drawn))
                copy.write_row((document_id, " ".join(drawn)))
        conn.execute(
            "INSERT INTO search_entries (document_id, version_id, content_sha256, title, "
            "description, filenames, tsv, indexed_at) "
            "SELECT d.id, v.id, md5(t.body) || md5(t.body), d.title, '', v.original_filename, "
            "setweight(to_tsvector('english'::regconfig, d.title), 'A') || "
            "setweight(to_tsvector('english'::regconfig, ''), 'B') || "
            "setweight(to_tsvector('english'::regconfig, "
            "regexp_replace(v.original_filename, '[^[:alnum:]]+', ' ', 'g')), 'C') || "
            "setweight(to_tsvector('english'::regconfig, t.body), 'D'), now() "
            "FROM bench_text t JOIN documents d ON d.id = t.document_id "
            "JOIN document_versions v ON v.document_id = d.id AND v.version = d.current_version"
        )
        conn.commit()
        conn.execute("ANALYZE search_entries")
        conn.commit()
    common = words[0]
    rare = min(words, key=lambda w: abs(document_frequency[w] - 50))
    # Words in about 10 % and 1 % of the documents: where the cost of ranking every
    # match crosses the target lies between these and the word in every document.
    tenth = min(words, key=lambda w: abs(document_frequency[w] - len(ids) // 10))
    hundredth = min(words, key=lambda w: abs(document_frequency[w] - len(ids) // 100))
    second = words[1]
    return {
        "seconds": time.perf_counter() - started,
        "common": common,
        "common_docs": document_frequency[common],
        "second": second,
        "rare": rare,
        "rare_docs": document_frequency[rare],
        "tenth": tenth,
        "tenth_docs": document_frequency[tenth],
        "hundredth": hundredth,
        "hundredth_docs": document_frequency[hundredth],
    }


def get(client: httpx.Client, params: dict[str, str]) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    response = client.get("/api/v1/documents", params=params)
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise RuntimeError(f"request failed: {response.status_code} {response.text[:300]}")
    return elapsed, response.json()


def cursor_at(client: httpx.Client, params: dict[str, str], page: int) -> tuple[str, int]:
    """The cursor that fetches page ``page`` (or the last page there is), walking to it."""
    cursor: str | None = None
    seen: set[str] = set()
    reached = 1
    for number in range(1, page):
        query = dict(params) | ({"cursor": cursor} if cursor else {})
        _, body = get(client, query)
        for item in body["items"]:
            if item["id"] in seen:
                raise RuntimeError("a hit came back twice while walking pages")
            seen.add(item["id"])
        if not body["next_cursor"]:
            break
        cursor, reached = body["next_cursor"], number + 1
    if cursor is None:
        raise RuntimeError("the search has a single page")
    return cursor, reached


def plot(results: dict[str, list[float]], docs: int) -> Any:
    fig, ax = new_figure(1, width=7.5, height=4.4)
    labels = list(results)
    ax.boxplot([[s * 1000 for s in results[k]] for k in labels], whis=(1, 99),
               flierprops={"markersize": 2})  # fmt: skip
    ax.set_xticks(range(1, len(labels) + 1), [k.replace("_", "\n") for k in labels], fontsize=8)
    for x, key in enumerate(labels, start=1):
        s = latency_summary_ms(results[key])
        ax.annotate(f"p50 {s['p50_ms']:.1f}\np99 {s['p99_ms']:.1f}", (x + 0.3, s["p99_ms"]),
                    fontsize=7, ha="center", va="bottom")  # fmt: skip
    ax.axhline(P99_TARGET_MS, color="red", ls=":", lw=1, label="p99 target 50 ms")
    ax.set_ylabel("latency (ms); box = p25-p75, whiskers = p1-p99")
    ax.set_title(f"GET /api/v1/documents?q=..., {docs:,} indexed docs in PostgreSQL")
    ax.legend(fontsize=8, loc="upper left")
    return save_figure(fig, NAME)


def main() -> int:
    parser = argparse.ArgumentParser(description="Full-text search latency on PostgreSQL.")
    parser.add_argument("--documents", type=int, default=100_000)
    parser.add_argument("--patients", type=int, default=100)
    parser.add_argument("--reps", type=int, default=100, help="Requests per scenario")
    parser.add_argument("--deep-page", type=int, default=20)
    args = parser.parse_args()

    from common import VaultServer

    load_before = os.getloadavg()
    with bench_databases() as dbs:
        env = {
            "MEDVAULT_DATABASE_URL": PG_URL.format(db=dbs["clinical"]),
            "MEDVAULT_AUTH_DATABASE_URL": PG_URL.format(db=dbs["auth"]),
        }
        with VaultServer(extra_env=env) as vault:
            seeded = seed(dbs["clinical"], patients=args.patients, documents=args.documents)
            corpus = index_corpus(dbs["clinical"])
            took = seeded["seconds"] + corpus["seconds"]
            common_docs, rare_docs = corpus["common_docs"], corpus["rare_docs"]
            print(f"seeded and indexed {args.documents:,} documents in {took:.1f} s; common "
                  f"word in {common_docs:,} documents, rare in {rare_docs}")  # fmt: skip
            with vault.client(timeout=60.0) as client:
                common = {"q": corpus["common"], "limit": str(PAGE)}
                for _ in range(10):  # warm-up
                    get(client, {"limit": str(PAGE)})
                    get(client, common)
                deep_cursor, deep = cursor_at(client, common, args.deep_page)
                scenarios = {
                    "list_page_1": {"limit": str(PAGE)},
                    "common_page_1": common,
                    f"common_page_{deep}": common | {"cursor": deep_cursor},
                    "rare_page_1": {"q": corpus["rare"], "limit": str(PAGE)},
                    "pct1_page_1": {"q": corpus["hundredth"], "limit": str(PAGE)},
                    "pct10_page_1": {"q": corpus["tenth"], "limit": str(PAGE)},
                    "two_words_page_1": {
                        "q": f"{corpus['common']} {corpus['second']}",
                        "limit": str(PAGE),
                    },
                }
                # Whether each search matched more than the vault ranks (its rank window).
                unranked = {
                    name: bool(get(client, params)[1].get("older_matches_unranked", False))
                    for name, params in scenarios.items()
                }
                results: dict[str, list[float]] = {name: [] for name in scenarios}
                for _ in range(args.reps):
                    for name, params in scenarios.items():
                        results[name].append(get(client, params)[0])
    load_after = os.getloadavg()

    summaries = {name: latency_summary_ms(values) for name, values in results.items()}
    baseline = summaries["list_page_1"]["p50_ms"]
    ratios = {name: round(s["p50_ms"] / baseline, 2) for name, s in summaries.items()}
    targets = {
        name: {"p99_ms": s["p99_ms"], "target": "< 50 ms", "met": s["p99_ms"] < P99_TARGET_MS}
        for name, s in summaries.items()
        if name != "list_page_1"
    }
    result = {
        "benchmark": NAME,
        "machine": machine_info(),
        "config": {
            "documents": args.documents,
            "patients": args.patients,
            "page_size": PAGE,
            "reps_per_scenario": args.reps,
            "words_per_document": WORDS_PER_DOC,
            "vocabulary": VOCABULARY,
            "zipf_s": 1.1,
            "text_search_config": "english",
            "common_word_documents": corpus["common_docs"],
            "rare_word_documents": corpus["rare_docs"],
            "pct1_word_documents": corpus["hundredth_docs"],
            "pct10_word_documents": corpus["tenth_docs"],
            "deep_page": deep,
            "client": "httpx.Client, one keep-alive connection, sequential requests",
            "load_average_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        },
        "seed_seconds": round(seeded["seconds"] + corpus["seconds"], 2),
        "latency": summaries,
        "older_matches_unranked": unranked,
        "p50_ratio_to_list_page_1": ratios,
        "targets": targets,
    }
    json_path = write_json(NAME, result)
    png_path = plot(results, args.documents)
    print(f"\n{args.documents:,} documents, {args.reps} requests per scenario:")
    for name, s in summaries.items():
        print(f"  {name:<16} p50 {s['p50_ms']:7.2f} ms  p99 {s['p99_ms']:7.2f} ms  "
              f"x{ratios[name]:.2f} of the list")  # fmt: skip
    for name, t in targets.items():
        print(f"  target p99 {name:<16} {t['p99_ms']:7.2f} ms < 50 ms  "
              f"{'MET' if t['met'] else 'MISSED'}")  # fmt: skip
    print(f"wrote {json_path} and {png_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
