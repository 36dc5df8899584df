"""Recorded experiments: runs too big for CI, stored with their provenance and read back by the book.

Some numbers in the book come from runs that take half an hour on a CPU (a full-corpus fine-tune, an
index benchmark at scale). They are *recorded experiments*:

1. a function in ``embedlessons.experiments.partN`` that does the run and returns a JSON-ready dict with
   its ``settings`` and ``per_query`` scores (so a reader can recompute any mean or paired test);
2. an entry in :data:`EXPERIMENTS` naming that function, the full-size settings and a *tiny* setting;
3. one command that runs it and writes ``embedlessons/results/<name>.json``::

       python -m embedlessons.experiments list
       python -m embedlessons.experiments run scifact_hardneg_full_size      # one (or several) by name
       python -m embedlessons.experiments run --all                          # every recorded experiment
       python -m embedlessons.experiments run scifact_hardneg_full_size --set kinds='["bm25"]' --append

   The file holds, beside the function's output, a ``runs`` list: for each command that contributed, the
   command line, settings, package versions, machine, date, git commit and wall time (:func:`provenance`);
4. notebooks read the file through :func:`load_result` (which checks it), never by path;
5. ``tests/test_recorded.py`` runs every entry's function at its tiny setting, so the code that produced a
   stored number is exercised by CI and cannot rot.
"""
from __future__ import annotations

import datetime
import importlib
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["RecordedExperiment", "EXPERIMENTS", "RESULTS_DIR", "result_path", "load_result", "check_result",
           "provenance", "run_experiment", "main", "cpu_flags", "SPEED_FLAGS"]

#: Where recorded results live (package data: installed with the package, so Colab finds them too).
RESULTS_DIR = Path(__file__).parent / "results"
#: Keys every result file must have; ``per_query`` maps run name -> {query id: score}.
REQUIRED_KEYS = ("experiment", "settings", "per_query", "runs")
#: Keys every entry of ``runs`` must have (values may say "not recorded" for runs older than this format).
RUN_KEYS = ("command", "date", "seconds", "settings", "versions", "machine")
_VERSIONED = ("embedlessons", "torch", "transformers", "sentence-transformers", "numpy", "faiss-cpu",
              "scikit-learn", "rank-bm25")


@dataclass(frozen=True)
class RecordedExperiment:
    """One recorded experiment.

    Attributes:
        name: result file stem (``embedlessons/results/<name>.json``) and the name on the command line.
        function: ``"module:function"``; called with keyword settings, returns a dict with ``settings`` and
            ``per_query``.
        section: the book section that shows the result, e.g. ``"3.3"``.
        description: one line for ``list``.
        settings: full-size keyword arguments (the recorded run); ``--set key=value`` overrides them.
        tiny: keyword arguments that make the same function finish in seconds (the CI test).
        merge: ``"module:function"`` that merges results of separate runs (``--append``), or None.
        split_by: settings that may differ between the runs merged into one result (e.g. ``kinds``: one kind
            of negative per command); every other full-size setting is the same in every stored run.
    """

    name: str
    function: str
    section: str
    description: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    tiny: Mapping[str, Any] = field(default_factory=dict)
    merge: str | None = None
    split_by: tuple[str, ...] = ()

    def resolve(self, what: str = "function") -> Callable:
        target = getattr(self, what)
        module, _, name = target.partition(":")
        return getattr(importlib.import_module(module), name)


# section 5.2's two comparisons (from MiniLM, from a small BERT) share their function, sources and sizes
_PAIR_SOURCE_RUN = dict(function="embedlessons.experiments.part5:pair_source_comparison",
                        merge="embedlessons.experiments.part5:merge_source_results", section="5.2",
                        split_by=("sources",))
_PAIR_SOURCES = {"sources": ["base", "labelled", "title_abstract", "inverse_cloze", "title_abstract+inverse_cloze"],
                 "seeds": [0, 1, 2], "batch_size": 32, "max_length": 64}

#: Every recorded experiment of the book, by name.
EXPERIMENTS: dict[str, RecordedExperiment] = {e.name: e for e in [
    RecordedExperiment(
        name="scifact_hardneg_full_size",
        function="embedlessons.experiments.part3:full_size_comparison",
        merge="embedlessons.experiments.part3:merge_full_size",
        section="3.3",
        description="MiniLM fine-tuned with random / BM25 / dense / mixed negatives, full SciFact corpus NDCG@10",
        settings={"kinds": ["random", "bm25", "dense", "mixed"], "steps": 150, "batch_size": 32, "lr": 2e-5,
                  "doc_max_length": 256, "seed": 0},
        tiny={"kinds": ["random", "mixed"], "steps": 2, "batch_size": 4, "query_max_length": 16,
              "doc_max_length": 16, "pool_docs": 600, "test_distractors": 10, "progress": False},
        split_by=("kinds",),
    ),
    RecordedExperiment(
        name="cross_encoder_scifact",
        function="embedlessons.experiments.part1:cross_encoder_comparison",
        section="1.2, 3.2",
        description="a cross-encoder fine-tuned from MiniLM on SciFact's training claims (BM25 negatives, two "
                    "epochs): BM25 and MiniLM top-20 reranked on 1.2's corpus, teacher scores for 3.2's candidates",
        settings={"model": "all-MiniLM-L6-v2", "negatives": 2, "negative_depth": 30, "epochs": 2, "batch_size": 16,
                  "lr": 1e-4, "max_length": 128, "depth": 20, "teacher_depth": 20, "eval_distractors": 1000,
                  "mining_distractors": 1000},
        tiny={"model": "small_bert", "negatives": 1, "negative_depth": 3, "batch_size": 4, "max_length": 32,
              "depth": 3, "teacher_depth": 2, "eval_distractors": 10, "mining_distractors": 10, "max_rows": 8,
              "query_max_length": 16, "doc_max_length": 16, "progress": False},
    ),
    RecordedExperiment(
        name="faiss_indexes_scifact",
        function="embedlessons.experiments.part3_indexes:index_comparison",
        section="3.4",
        description="FAISS index types on SciFact's 5,183 abstracts (MiniLM): recall@10, latency, memory",
        settings={"collection": "scifact", "vectors": "minilm"},
        tiny={"collection": "scifact", "vectors": "static", "limit": 400, "progress": False},
    ),
    RecordedExperiment(
        name="faiss_indexes_large",
        function="embedlessons.experiments.part3_indexes:index_comparison",
        section="3.4",
        description="FAISS index types on ~104k staged English texts (static MiniLM vectors): recall@10, latency, "
                    "memory",
        settings={"collection": "large", "vectors": "static"},
        tiny={"collection": "large", "vectors": "static", "limit": 400, "progress": False},
    ),
    RecordedExperiment(
        name="multitask_four_tasks",
        function="embedlessons.experiments.part4:recipe_comparison",
        merge="embedlessons.experiments.part4:merge_recipe_results",
        section="4.1, 4.3, 4.4",
        description="MiniLM fine-tuned by retrieval-only and multi-task recipes (samplers, task weights), 3 seeds, "
                    "scored on SciFact, STS-B and AG News (classification, clustering)",
        settings={"recipes": ["base", "retrieval", "multitask", "uniform", "proportional", "round_robin", "loss_ratio",
                              "dwa", "uncertainty", "sts_cosent", "sts_mse", "news_prototypes", "news_supcon",
                              "news_center"], "seeds": [0, 1, 2], "steps": 60,
                  "batch_size": 32, "lr": 5e-5, "max_length": 64, "top_layers": 3},
        tiny={"recipes": ["base", "retrieval", "multitask"], "seeds": [0], "steps": 2, "batch_size": 4,
              "rows_per_task": 40, "scifact_distractors": 10, "sts_pairs": 30, "news_train": 40, "news_test": 40,
              "progress": False},
        split_by=("recipes",),
    ),
    RecordedExperiment(
        name="mrl_dimension_curve",
        function="embedlessons.experiments.part4:mrl_dimension_curve",
        section="4.5",
        description="MiniLM fine-tuned with and without MRL (60 steps, 3 seeds), SciFact NDCG@10 per claim and "
                    "STS-B cosines per pair at every prefix length 32-384",
        settings={"seeds": [0, 1, 2], "steps": 60, "batch_size": 32, "lr": 5e-5, "max_length": 64,
                  "top_layers": 3, "dims": [384, 256, 128, 64, 32], "scifact_distractors": 217},
        tiny={"seeds": [0], "steps": 2, "batch_size": 4, "max_length": 16, "dims": [384, 32],
              "scifact_distractors": 10, "max_rows": 16, "query_max_length": 16, "doc_max_length": 16,
              "sts_pairs": 30, "progress": False},
    ),
    RecordedExperiment(
        name="unlabelled_vs_labelled",
        description="MiniLM fine-tuned on SciFact's labelled claims vs pairs made from its corpus alone (title -> "
                    "abstract, inverse cloze), equal step budget, 3 seeds, NDCG@10 per test claim",
        settings={**_PAIR_SOURCES, "steps": 60, "lr": 5e-5, "top_layers": 3},
        tiny={"sources": ["base", "title_abstract+inverse_cloze"], "seeds": [0], "steps": 2,
              "batch_size": 4, "max_rows": 40, "scifact_distractors": 10, "progress": False},
        **_PAIR_SOURCE_RUN,
    ),
    RecordedExperiment(
        name="unlabelled_vs_labelled_scratch",
        description="the same comparison from a random-initialised small BERT (2 layers, 128 wide): labelled "
                    "claims vs corpus-made pairs, 300 steps, 3 seeds",
        settings={**_PAIR_SOURCES, "steps": 300, "lr": 1e-3, "top_layers": None, "start": "small_bert"},
        tiny={"sources": ["base", "inverse_cloze"], "seeds": [0], "steps": 2, "batch_size": 4, "lr": 1e-3,
              "top_layers": None, "max_rows": 40, "scifact_distractors": 10, "start": "small_bert",
              "progress": False},
        **_PAIR_SOURCE_RUN,
    ),
    RecordedExperiment(
        name="three_stage_training",
        function="embedlessons.experiments.part5:three_stage_comparison",
        section="5.3",
        description="warm-up (corpus pairs), multi-task, hard negatives, from MiniLM and from a small BERT, "
                    "3 seeds, SciFact / STS-B / AG News scored after every stage",
        settings={"starts": ["all-MiniLM-L6-v2", "small_bert"], "seeds": [0, 1, 2], "batch_size": 32,
                  "max_length": 64},
        tiny={"starts": ["small_bert"], "seeds": [0], "batch_size": 4, "steps": 2, "max_rows": 40,
              "scifact_distractors": 10, "sts_pairs": 30, "news_train": 40, "news_test": 40, "progress": False},
        split_by=("starts", "seeds", "score_start"),
        merge="embedlessons.experiments.part5:merge_three_stage_results",
    ),
    RecordedExperiment(
        name="library_vs_ours",
        function="embedlessons.experiments.part5_library:library_comparison",
        section="5.6",
        description="MiniLM fine-tuned on SciFact's labelled claims by our trainer vs SentenceTransformerTrainer "
                    "(MNRL, cached MNRL, Matryoshka), same data, steps and seeds, 3 seeds, NDCG@10 per test claim",
        settings={"arms": ["ours_info_nce", "st_mnrl", "st_cached_mnrl", "ours_matryoshka", "st_matryoshka"],
                  "seeds": [0, 1, 2], "steps": 60, "batch_size": 32, "lr": 5e-5, "max_length": 64,
                  "top_layers": 3, "scifact_distractors": 217},
        tiny={"arms": ["ours_info_nce", "st_mnrl"], "seeds": [0], "steps": 2, "batch_size": 4, "max_rows": 16,
              "scifact_distractors": 10, "max_length": 16, "query_max_length": 16, "doc_max_length": 16,
              "progress": False},
    ),
    RecordedExperiment(
        name="onnx_speed_quality",
        function="embedlessons.onnx_export:onnx_comparison",
        section="5.5",
        description="MiniLM in sentence-transformers, PyTorch and ONNX Runtime (fp32, optimised, int8 per channel / "
                    "per tensor): encode throughput on 300 SciFact abstracts (1 thread), NDCG@10, STS-B Spearman",
        settings={"model": "all-MiniLM-L6-v2", "n_docs": 300, "batch_size": 32, "max_length": 256, "threads": 1,
                  "repeats": 3},
        tiny={"model": "small_bert", "n_docs": 12, "batch_size": 4, "max_length": 16, "threads": 1, "repeats": 1,
              "n_sts": 12, "n_queries": 6, "query_max_length": 16, "sts_max_length": 16},
    ),
    RecordedExperiment(
        name="service_load_test",
        function="embedlessons.loadtest:recorded_load_test",
        section="5.5",
        description="the embedding service (MiniLM, 1 server thread) under a closed-loop load test on loopback: "
                    "throughput and p50/p99 latency at 1-64 concurrent clients, with and without request batching",
        settings={"model": "all-MiniLM-L6-v2", "concurrencies": [1, 4, 16, 64], "requests": 400,
                  "batching_modes": [True, False], "server_threads": 1},
        tiny={"model": "small_bert", "concurrencies": [1, 4], "requests": 8, "n_texts": 20, "warmup_requests": 2,
              "max_length": 32},
    ),
    RecordedExperiment(
        name="gradcache_memory",
        function="embedlessons.experiments.part5_performance:gradcache_memory",
        section="5.7",
        description="one step of in-batch InfoNCE on 128 SciFact pairs (MiniLM, 128 tokens, 1 thread): peak memory "
                    "and time of the big batch, GradCache and sentence-transformers' cached MNRL",
        settings={"model": "all-MiniLM-L6-v2", "batch_size": 128, "max_length": 128, "mini_batches": [8, 16, 32],
                  "st_mini_batches": [8, 16, 32], "threads": 1},
        tiny={"model": "small_bert", "batch_size": 8, "max_length": 16, "mini_batches": [4], "st_mini_batches": [4]},
    ),
]}


def _experiment(name: str) -> RecordedExperiment:
    if name not in EXPERIMENTS:
        raise KeyError(f"unknown recorded experiment {name!r}; known: {sorted(EXPERIMENTS)}")
    return EXPERIMENTS[name]


def result_path(name: str, results_dir: str | Path | None = None) -> Path:
    """``embedlessons/results/<name>.json`` (or the same name under ``results_dir``)."""
    return Path(results_dir or RESULTS_DIR) / f"{_experiment(name).name}.json"


def check_result(result: Mapping[str, Any], where: str = "result") -> None:
    """Raise ``ValueError`` naming what is missing if ``result`` is not a well-formed recorded result."""
    missing = [k for k in REQUIRED_KEYS if k not in result]
    if missing:
        raise ValueError(f"{where}: missing keys {missing}; a recorded result needs {list(REQUIRED_KEYS)}")
    if not isinstance(result["per_query"], Mapping) or not result["per_query"]:
        raise ValueError(f"{where}: per_query must map each run to its per-query scores")
    for run, scores in result["per_query"].items():
        if not isinstance(scores, Mapping) or not scores:
            raise ValueError(f"{where}: per_query[{run!r}] must be a non-empty {{query id: score}} mapping")
    if not isinstance(result["runs"], list) or not result["runs"]:
        raise ValueError(f"{where}: runs must list the commands that produced this result")
    for i, run in enumerate(result["runs"]):
        lacking = [k for k in RUN_KEYS if k not in run]
        if lacking:
            raise ValueError(f"{where}: runs[{i}] lacks {lacking}")


def load_result(name: str, results_dir: str | Path | None = None) -> dict:
    """The stored result of recorded experiment ``name``, checked (:func:`check_result`).

    Raises ``FileNotFoundError`` with the command that writes it when it has not been recorded yet.
    """
    path = result_path(name, results_dir)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: record it with `python -m embedlessons.experiments run {name}`")
    try:
        result = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON (line {err.lineno}: {err.msg})") from None
    check_result(result, where=str(path))
    return result


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for package in _VERSIONED:
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "not installed"
    return out


#: CPU instruction-set flags that change the speed (and, for int8, the rounding) of a run's kernels.
SPEED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def cpu_flags(flags: Sequence[str] = SPEED_FLAGS, cpuinfo: str = "/proc/cpuinfo") -> dict:
    """The CPU's model name and whether it reports each of ``flags``.

    Returns ``{"model": str, "flags": {flag: bool}}``; where ``cpuinfo`` cannot be read (not Linux), the model
    is ``"unknown"`` and every flag False.
    """
    try:
        with open(cpuinfo) as f:
            text = f.read()
    except OSError:
        text = ""
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines()
                  if line.startswith("model name")), "unknown")
    found = set(next((line.split(":", 1)[1].split() for line in text.splitlines()
                      if line.startswith(("flags", "Features"))), []))
    return {"model": model, "flags": {flag: flag in found for flag in flags}}


def _machine() -> dict[str, Any]:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    cpu = cpu_flags(SPEED_FLAGS)
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu": cpu["model"], "cpu_flags": [f for f, has in cpu["flags"].items() if has],
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "gpu": gpu}


def _git_commit() -> str:
    try:
        here = Path(__file__).parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        commit = out.stdout.strip()
        if not commit:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "."], cwd=here, capture_output=True,
                               text=True, timeout=5).stdout.strip()
        return commit + (" + uncommitted changes to embedlessons/" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def provenance(command: str, settings: Mapping[str, Any], seconds: float) -> dict[str, Any]:
    """What a reader needs to reproduce one run: command, settings, versions, machine, date, commit, time."""
    return {"command": command, "settings": dict(settings), "versions": _versions(), "machine": _machine(),
            "date": datetime.date.today().isoformat(), "git_commit": _git_commit(), "seconds": round(seconds, 1)}


def run_experiment(name: str, overrides: Mapping[str, Any] | None = None, *, tiny: bool = False,
                   out: str | Path | None = None, append: bool = False, command: str | None = None) -> dict:
    """Run recorded experiment ``name`` (full size, or its ``tiny`` setting) and return its result.

    ``overrides`` replace individual settings. With ``out`` the result is written there as JSON; with
    ``append`` it is first merged (the experiment's ``merge`` function) into the result already in ``out``,
    e.g. one kind of negative per command on a CPU.
    """
    experiment = _experiment(name)
    settings = {**(experiment.tiny if tiny else experiment.settings), **(overrides or {})}
    if append:
        if experiment.merge is None:
            raise ValueError(f"{name} cannot be appended to: it has no merge function")
        if out is None or not Path(out).exists():
            raise FileNotFoundError(f"--append needs an existing result file, not {out}")
    function = experiment.resolve("function")
    started = time.perf_counter()
    result = function(**settings)
    command = command or f"python -m embedlessons.experiments run {name}" + (" --tiny" if tiny else "")
    result = {"experiment": name, **result, "runs": [provenance(command, settings, time.perf_counter() - started)]}
    check_result(result, where=f"{name} (just computed)")
    if append:
        previous = json.loads(Path(out).read_text())
        result = {"experiment": name, **experiment.resolve("merge")([previous, result])}
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    return result


def _parse_set(items: Sequence[str]) -> dict[str, Any]:
    """``key=value`` pairs; a value is read as JSON when it parses (numbers, lists, true/null), else a string."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects key=value, got {item!r}")
        try:
            out[key.replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            out[key.replace("-", "_")] = value
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m embedlessons.experiments {list, run}``: see the module docstring."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m embedlessons.experiments",
                                     description="Run the book's recorded experiments and store their results "
                                                 "(with command, settings, versions, machine and date).")
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="list the recorded experiments and whether a result is stored")
    run = sub.add_parser("run", help="run one or more recorded experiments and write their result files")
    run.add_argument("names", nargs="*", help="experiment names (see `list`)")
    run.add_argument("--all", action="store_true", help="run every recorded experiment")
    run.add_argument("--tiny", action="store_true", help="the seconds-long setting CI uses (not for the book)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override one setting, e.g. --set steps=300 --set kinds='[\"bm25\"]' (JSON values)")
    run.add_argument("--out-dir", type=Path, default=None,
                     help=f"where to write <name>.json (default: {RESULTS_DIR}; --tiny needs one)")
    run.add_argument("--append", action="store_true",
                     help="merge into the result already stored (e.g. other kinds, same settings)")
    args = parser.parse_args(argv)

    if args.action == "list":
        for e in EXPERIMENTS.values():
            stored = "stored" if result_path(e.name).exists() else "not recorded"
            print(f"{e.name:32s} section {e.section:5s} {stored:13s} {e.description}")
        return 0
    names = list(EXPERIMENTS) if args.all else args.names
    if not names:
        parser.error("name at least one experiment, or --all")
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        parser.error(f"unknown experiments {unknown}; known: {sorted(EXPERIMENTS)}")
    if args.tiny and args.out_dir is None:
        parser.error("--tiny results are not the book's: give --out-dir")
    try:
        overrides = _parse_set(args.set)
    except ValueError as err:
        parser.error(str(err))
    command = "python -m embedlessons.experiments " + shlex.join(sys.argv[1:] if argv is None else argv)
    for name in names:
        out = result_path(name, args.out_dir)
        result = run_experiment(name, overrides, tiny=args.tiny, out=out, append=args.append, command=command)
        print(f"{name}: wrote {out} ({len(result['per_query'])} runs with per-query scores)")
    return 0
