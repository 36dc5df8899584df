"""Published MTEB figures, kept as cited data for section 1.4 ("The model landscape").

Nothing in this module is measured by the book. Every number below was copied
from a public table that can be cited precisely; the ``source`` and ``date`` of
each row say which table and when. A number that could not be checked against
such a table is ``None``, never an estimate.

The figures are English MTEB (version 1) averages over 56 datasets, as shown on
the MTEB leaderboard in August-September 2023 and reproduced by two model
authors in their own repositories:

* the BAAI FlagEmbedding README, table "MTEB" (columns: Average (56),
  Retrieval (15), Clustering (11), Pair Classification (3), Reranking (4),
  STS (10), Summarization (1), Classification (12));
* the ``thenlper/gte-large`` model card (Alibaba DAMO), table "Metrics", which
  lists the same values for the models both tables share.

Read :data:`CAVEATS` before comparing these numbers with anything else.

Parameter counts are not given by either table. They are filled in only where
this book measures them itself (``params_millions`` of all-MiniLM-L6-v2,
checked by ``tests/test_landscape.py``); elsewhere they are ``None``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

__all__ = [
    "PublishedResult",
    "MTEB_PUBLISHED",
    "MTEB_EN_V1_TASKS",
    "MTEB_EN_V1_DATASETS",
    "SOURCES",
    "CAVEATS",
    "published_mteb_table",
    "get_published",
    "published_table_markdown",
]


@dataclass(frozen=True)
class PublishedResult:
    """One row of the published MTEB table.

    Scores are on MTEB's 0-100 scale: ``mteb_avg`` is the average over the 56
    English datasets, ``retrieval_avg`` the mean NDCG@10 over the 15 retrieval
    datasets, ``sts_avg`` the mean Spearman correlation (cosine similarity) over
    the 10 STS datasets. ``dims`` and ``max_tokens`` are the embedding size and
    the sequence length as listed in the source table. ``date`` is the month of
    the source snapshot (``YYYY-MM``).
    """

    model: str
    params_millions: float | None
    dims: int | None
    max_tokens: int | None
    mteb_avg: float | None
    retrieval_avg: float | None
    sts_avg: float | None
    source: str
    date: str
    note: str = ""


#: English MTEB v1 task categories and their dataset counts, from the column
#: headers of the cited tables ("Average (56)", "Retrieval (15)", ...).
MTEB_EN_V1_TASKS: dict[str, int] = {
    "Classification": 12,
    "Clustering": 11,
    "PairClassification": 3,
    "Reranking": 4,
    "Retrieval": 15,
    "STS": 10,
    "Summarization": 1,
}
MTEB_EN_V1_DATASETS: int = sum(MTEB_EN_V1_TASKS.values())  # 56

_FLAG_README_2023_08 = (
    "BAAI FlagEmbedding README, table 'MTEB' (Evaluation Results), "
    "github.com/FlagOpen/FlagEmbedding at commit 047ef4d (August 2023); "
    "identical values in the thenlper/gte-large model card, table 'Metrics'"
)
_FLAG_README_2023_09 = (
    "BAAI FlagEmbedding README, table 'MTEB' (Evaluation), after the "
    "bge-*-v1.5 release of 2023-09-15, github.com/FlagOpen/FlagEmbedding; "
    "the same table is in the BAAI/bge-*-en-v1.5 model cards"
)

#: Where the rows come from, keyed by a short name, with what each source is.
SOURCES: dict[str, str] = {
    "flag-readme-2023-08": _FLAG_README_2023_08,
    "flag-readme-2023-09": _FLAG_README_2023_09,
    "mteb-paper": (
        "Muennighoff et al., MTEB: Massive Text Embedding Benchmark, EACL 2023 "
        "(arXiv:2210.07316): defines the benchmark, its 8 task types and the "
        "56 English datasets averaged here"
    ),
}

_SEQ_NOTE_512 = (
    "The source lists 512, the position-embedding limit; sentence-transformers "
    "truncates this model's inputs at 256 tokens by default."
)
_SEQ_NOTE_514 = (
    "The source lists 514, the position-embedding size; sentence-transformers "
    "truncates this model's inputs at 384 tokens by default."
)

# fmt: off
MTEB_PUBLISHED: tuple[PublishedResult, ...] = (
    # --- BAAI BGE v1.5 (xiao2023bge), released 2023-09 -----------------------
    PublishedResult("BAAI/bge-large-en-v1.5", None, 1024, 512, 64.23, 54.29, 83.11,
                    _FLAG_README_2023_09, "2023-09",
                    "CLS pooling; an instruction prefix is recommended for retrieval queries."),
    PublishedResult("BAAI/bge-base-en-v1.5", None, 768, 512, 63.55, 53.25, 82.40,
                    _FLAG_README_2023_09, "2023-09",
                    "CLS pooling; an instruction prefix is recommended for retrieval queries."),
    PublishedResult("BAAI/bge-small-en-v1.5", None, 384, 512, 62.17, 51.68, 81.59,
                    _FLAG_README_2023_09, "2023-09",
                    "CLS pooling; an instruction prefix is recommended for retrieval queries."),
    # --- Alibaba GTE (li2023gte) ---------------------------------------------
    PublishedResult("thenlper/gte-large", None, 1024, 512, 63.13, 52.22, 83.35,
                    _FLAG_README_2023_08, "2023-08"),
    PublishedResult("thenlper/gte-base", None, 768, 512, 62.39, 51.14, 82.30,
                    _FLAG_README_2023_08, "2023-08"),
    PublishedResult("thenlper/gte-small", None, 384, 512, 61.36, 49.46, 82.07,
                    _FLAG_README_2023_08, "2023-08"),
    # --- Microsoft E5 v2 (wang2022e5) ----------------------------------------
    PublishedResult("intfloat/e5-large-v2", None, 1024, 512, 62.25, 50.56, 82.05,
                    _FLAG_README_2023_08, "2023-08",
                    "Expects 'query: ' / 'passage: ' prefixes."),
    PublishedResult("intfloat/e5-base-v2", None, 768, 512, 61.50, 50.29, 81.05,
                    _FLAG_README_2023_08, "2023-08",
                    "Expects 'query: ' / 'passage: ' prefixes."),
    PublishedResult("intfloat/e5-small-v2", None, 384, 512, 59.93, 49.04, 80.39,
                    _FLAG_README_2023_08, "2023-08",
                    "Expects 'query: ' / 'passage: ' prefixes."),
    # --- Instruction-tuned (su2023instructor) --------------------------------
    PublishedResult("hkunlp/instructor-xl", None, 768, 512, 61.79, 49.26, 83.06,
                    _FLAG_README_2023_08, "2023-08",
                    "Every input carries a task instruction."),
    # --- Closed API model ----------------------------------------------------
    PublishedResult("OpenAI text-embedding-ada-002", None, 1536, 8192, 60.99, 49.25, 80.97,
                    _FLAG_README_2023_08, "2023-08",
                    "API model; weights, size and training data are not public."),
    # --- Sentence-T5 (ni2022sentencet5) --------------------------------------
    PublishedResult("sentence-transformers/sentence-t5-xxl", None, 768, 512, 59.51, 42.24, 82.63,
                    _FLAG_README_2023_08, "2023-08",
                    "Encoder of an 11B-parameter T5 (the XXL size)."),
    PublishedResult("sentence-transformers/sentence-t5-base", None, 768, 512, 55.27, 33.63, 81.14,
                    "BAAI FlagEmbedding README, table 'MTEB' (Evaluation Results), "
                    "github.com/FlagOpen/FlagEmbedding at commit 047ef4d (August 2023)",
                    "2023-08"),
    # --- sentence-transformers all-* models (reimers2019sbert) ---------------
    PublishedResult("sentence-transformers/all-mpnet-base-v2", None, 768, 514, 57.78, 43.81, 80.28,
                    _FLAG_README_2023_08, "2023-08", _SEQ_NOTE_514),
    PublishedResult("sentence-transformers/all-MiniLM-L12-v2", None, 384, 512, 56.53, 42.69, 79.80,
                    _FLAG_README_2023_08, "2023-08", _SEQ_NOTE_512),
    PublishedResult("sentence-transformers/all-MiniLM-L6-v2", 22.7, 384, 512, 56.26, 41.95, 78.90,
                    _FLAG_README_2023_08, "2023-08",
                    _SEQ_NOTE_512 + " params_millions is measured by this book "
                    "(BertModel parameter count, checked in tests/test_landscape.py), "
                    "not taken from the source. The model used throughout the book."),
    # --- SGPT (muennighoff2022sgpt) ------------------------------------------
    PublishedResult("bigscience/sgpt-bloom-7b1-msmarco", None, 4096, 2048, 57.59, 48.22, 77.74,
                    _FLAG_README_2023_08, "2023-08",
                    "Decoder (BLOOM 7.1B) embedding model."),
    # --- Contriever (izacard2022contriever) ----------------------------------
    PublishedResult("nthakur/contriever-base-msmarco", None, 768, 512, 56.00, 41.88, 76.51,
                    _FLAG_README_2023_08, "2023-08",
                    "Contriever fine-tuned on MS MARCO."),
)
# fmt: on


CAVEATS: str = """\
How to read the published MTEB table

* What is averaged. These are English MTEB (version 1) scores: the average over
  56 datasets in 7 task types (classification 12, clustering 11, pair
  classification 3, reranking 4, retrieval 15, STS 10, summarization 1).
  Retrieval is mean NDCG@10; STS is mean Spearman correlation of cosine
  similarities. A model that is best on average need not be best at retrieval,
  and the retrieval average hides large differences between datasets.
* Not comparable across benchmark versions. MTEB has since been revised
  (MTEB v2, the multilingual MMTEB and new English benchmark selections with
  different datasets). Averages from those are on a different scale of
  difficulty and must not be put in the same column as these. The leaderboard
  figures can also differ in the last digit from the tables printed in the MTEB
  paper, because results were recomputed after publication.
* Self-reported. Leaderboard entries are submitted by model authors; the
  benchmark organisers do not retrain or re-run every model.
* Training data may overlap the test sets. Several models train on data from
  the same sources as some MTEB datasets (MS MARCO, Natural Questions, NLI,
  Quora, StackExchange, ...), and some on those datasets' training splits, so a
  high score is partly in-domain.
* Dated. The rows are snapshots from August-September 2023 (see each row's
  date). Newer and stronger models exist; the table is here to show the shape
  of the trade-offs (size, dimension, quality), not to pick a winner today.
* Settings matter. Scores assume each model's own recipe: pooling, maximum
  length, and query/passage prefixes or instructions (E5, BGE, Instructor).
  Using a model without them gives lower numbers than the table.
* Measure on your own data. Section 1.4 measures BM25 and all-MiniLM-L6-v2 on
  SciFact and STS-B on this machine; that is the kind of number a decision
  should rest on."""


def get_published(model: str) -> PublishedResult:
    """Return the row for ``model`` (full id, or the part after the last ``/``)."""
    for row in MTEB_PUBLISHED:
        if row.model == model or row.model.split("/")[-1] == model:
            return row
    raise KeyError(f"no published MTEB row for {model!r}")


def published_mteb_table(sort_by: str | None = "mteb_avg", descending: bool = True) -> list[dict]:
    """The published rows as a list of plain dicts (no pandas needed).

    ``sort_by`` is a field name (``None`` keeps the stored order); rows whose
    value is ``None`` go last.
    """
    names = [f.name for f in fields(PublishedResult)]
    if sort_by is not None and sort_by not in names:
        raise ValueError(f"unknown field {sort_by!r}; choose from {names}")
    rows = [asdict(r) for r in MTEB_PUBLISHED]
    if sort_by is None:
        return rows
    present = [r for r in rows if r[sort_by] is not None]
    missing = [r for r in rows if r[sort_by] is None]
    present.sort(key=lambda r: r[sort_by], reverse=descending)
    return present + missing


def _fmt(value, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def published_table_markdown(columns: tuple[str, ...] = (
    "model", "dims", "max_tokens", "mteb_avg", "retrieval_avg", "sts_avg", "date",
)) -> str:
    """A Markdown table of the published rows (sorted by MTEB average)."""
    header = "| " + " | ".join(columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    body = [
        "| " + " | ".join(_fmt(row[c]) for c in columns) + " |"
        for row in published_mteb_table()
    ]
    return "\n".join([header, rule, *body])
