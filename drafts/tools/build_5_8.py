import sys
sys.path.insert(0, "/work/main/drafts/tools")
from nbtools import md, code, colab, write

cells = [
md(r"""
# 5.8 Summary, decision guide, exercises and projects

## What Part 5 showed

- **The pipeline** (5.1): one command from a BEIR folder to a trained, evaluated model that
  sentence-transformers loads, with the measured cost of each stage.
- **Data** (5.2): loading by path with errors that name the line; exact and near duplicates; leakage between
  splits; pairs made without labels against labelled pairs at an equal budget.
- **Three stages** (5.3): a warm-up, multi-task training and hard negatives, each scored on four task
  families after every stage.
- **Evaluation** (5.4): metrics equal to pytrec_eval and to the `mteb` package; bootstrap intervals and
  paired tests.
- **Deployment** (5.5): an ONNX export with pooling and normalisation inside the graph, int8 weights, and
  an embedding service with limits, clear errors and request batching, measured under load.
- **The library way** (5.6): the same fine-tune with sentence-transformers' trainer.
- **Performance** (5.7): dynamic padding and bucketing, mixed precision, GradCache against gradient
  accumulation, and data-parallel training with negatives gathered across processes.
"""),
colab(),
code(r"""
import numpy as np
import torch
import torch.nn.functional as F

from embedlessons.book import glue, show_table
from embedlessons.exercises.part5 import check_batched_encode, check_pooling_head
from embedlessons.experiments.part3 import paired_test, recorded_full_size
from embedlessons.experiments.part4 import FOUR_TASK_EXPERIMENT, compare_recipes
from embedlessons.experiments.part5_library import LIBRARY_EXPERIMENT, compare_arms
from embedlessons.experiments.part5_projects import chinese_start
from embedlessons.recorded import load_result
from embedlessons.stats import verdict
"""),
md(r"""
## A decision guide

Which of the book's techniques is worth its cost depends on what the model must do and on what data exist.
The table collects the measured effect of each step from the recorded runs of earlier sections (SciFact
NDCG@10 unless said otherwise, paired 95% intervals):
"""),
code(r"""
full = recorded_full_size()
four = load_result(FOUR_TASK_EXPERIMENT)
library = load_result(LIBRARY_EXPERIMENT)
multi = compare_recipes(four, "multitask", "retrieval")
mrl64 = compare_arms(library, "ours_matryoshka", "ours_info_nce", dim=64)
onnx_run = load_result("onnx_speed_quality")
int8_cost = paired_test(onnx_run["per_query"]["onnx_int8_per_channel"], onnx_run["per_query"]["torch_fp32"])
interval = lambda t: f"{t['diff']:+.3f} [{t['ci_low']:+.3f}, {t['ci_high']:+.3f}]"
train_hours = full["seconds"]["dense"]["train"] / 3600
rows = [
    {"step": "off the shelf (MiniLM)", "where": "3.3", "effect": f"NDCG@10 {full['ndcg']['MiniLM']:.3f}",
     "cost": "none"},
    {"step": "fine-tune + hard negatives", "where": "3.3", "effect": interval(full["vs_minilm"]["dense"]),
     "cost": f"{train_hours:.1f} h on 2 CPU cores"},
    {"step": "multi-task vs retrieval only", "where": "4.1", "effect": interval(multi["retrieval"]),
     "cost": "three more datasets"},
    {"step": "  (same, AG News accuracy)", "where": "4.1", "effect": interval(multi["classification"]), "cost": ""},
    {"step": "MRL vs plain, at 64 dims", "where": "5.6", "effect": interval(mrl64), "cost": "same training steps"},
    {"step": "ONNX int8 vs PyTorch fp32", "where": "5.5", "effect": interval(int8_cost),
     "cost": f"none; encodes {onnx_run['speedup_vs_st']['onnx_int8_per_channel']:.1f}x as fast"},
]
print(show_table(rows))
glue("guide_minilm", round(full["ndcg"]["MiniLM"], 3))
glue("guide_int8", interval(int8_cost))
glue("guide_int8_speed", f"{onnx_run['speedup_vs_st']['onnx_int8_per_channel']:.1f}")
glue("guide_finetune", interval(full["vs_minilm"]["dense"]))
glue("guide_hours", round(train_hours, 1))
glue("guide_multi_retrieval", interval(multi["retrieval"]))
glue("guide_multi_news", interval(multi["classification"]))
glue("guide_mrl64", interval(mrl64))
"""),
md(r"""
Read as a guide:

- **Start off the shelf** and measure on your own queries. MiniLM reaches {glue:text}`guide_minilm` on the
  full SciFact corpus with no work at all; BM25 is the baseline to beat (Part 1).
- **Fine-tune when you have labelled pairs** (even a few hundred): with mined hard negatives, the change
  was {glue:text}`guide_finetune` on SciFact, for {glue:text}`guide_hours` hours of CPU time. Without
  labels, pairs made from the corpus alone did not help a pre-trained model at this budget (5.2).
- **Train multi-task when one model must serve several kinds of task.** Against the retrieval-only
  fine-tune it changed SciFact by {glue:text}`guide_multi_retrieval` and AG News accuracy by
  {glue:text}`guide_multi_news`: a trade, not a free gain.
- **Train with MRL when you will store short vectors.** At 64 dimensions it changed NDCG@10 by
  {glue:text}`guide_mrl64` against plain training, and it costs nothing at training time.
- **Deploy with ONNX and int8 when throughput matters**: int8 weights changed NDCG@10 by
  {glue:text}`guide_int8` (on a subset of the corpus, section 5.5) and encoded
  {glue:text}`guide_int8_speed` times as fast as sentence-transformers on one CPU thread; check the quality
  on your own data, batch requests and pad dynamically (the two exercises below build both).

## Exercise 7: a pooling head that exports

```{exercise} Pooling inside the graph
:label: ex-pooling-head

An exported model should hold the pooling and the normalisation inside its graph, so that any ONNX
runtime returns sentence vectors, not token vectors. Complete `my_pooling_head(token_embeddings, attention_mask)`: token vectors
`[B, T, d]` and the mask `[B, T]` (1 for a real token, 0 for padding) in, the L2-normalised mean of each
text's real tokens `[B, d]` out. Use torch operations only, so the function traces into a graph whose
batch size and length stay free. `check_pooling_head(my_pooling_head)` checks the values on inputs whose
padding holds large numbers, then exports your head to ONNX and runs it in ONNX Runtime on another batch
size and length.
```
"""),
code(r"""
def my_pooling_head(token_embeddings, attention_mask):
    # your code here
    raise NotImplementedError


check_pooling_head(my_pooling_head)
"""),
md(r"""
Averaging over every position is the slip that costs the most, because short texts are then mostly
padding:
"""),
code(r"""
def mean_of_all_positions(token_embeddings, attention_mask):
    return F.normalize(token_embeddings.mean(dim=1), dim=-1)          # wrong: the padding counts


check_pooling_head(mean_of_all_positions)
"""),
md(r"""
```{solution-start} ex-pooling-head
:class: dropdown
```
Multiply by the mask, divide by the number of real tokens, normalise. The solution has its own name, so
running every cell keeps your `my_pooling_head`:
"""),
code(r"""
def solution_pooling_head(token_embeddings, attention_mask):
    mask = attention_mask.unsqueeze(-1).to(token_embeddings.dtype)
    mean = (token_embeddings * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
    return F.normalize(mean, dim=-1)


check_pooling_head(solution_pooling_head)
"""),
md(r"""
```{solution-end}
```

`embedlessons.onnx_export.export_onnx` wraps a whole bi-encoder the same way.

## Exercise 8: batching requests

```{exercise} One forward pass for several requests
:label: ex-batched-encode

The embedding service (`python -m embedlessons.serve`) collects the requests that arrive close together and embeds them in one forward
pass. Complete `my_batched_encode(requests, encode, max_batch)`: `requests` is a list of requests in
arrival order, each a list of texts; `encode(texts)` returns an array `[len(texts), d]`. Go through the
requests in order and put consecutive ones into one call of `encode` while their texts fit in `max_batch`
(never split a request; one larger than `max_batch` goes alone), then return one array per request, its
own rows, in the order of `requests`. `check_batched_encode(my_batched_encode)` counts the calls and the
texts in each, and names the mistake if it recognises one.
```
"""),
code(r"""
def my_batched_encode(requests, encode, max_batch):
    # your code here
    raise NotImplementedError


check_batched_encode(my_batched_encode)
"""),
md(r"""
Cutting the flat list of texts into chunks of `max_batch` fills every pass, but splits requests, so a
request waits for two passes:
"""),
code(r"""
def chunks_of_texts(requests, encode, max_batch):
    texts = [t for r in requests for t in r]
    vectors = np.concatenate([encode(texts[s:s + max_batch]) for s in range(0, len(texts), max_batch)])
    ends = np.cumsum([len(r) for r in requests])
    return [vectors[e - len(r):e] for r, e in zip(requests, ends)]


check_batched_encode(chunks_of_texts)
"""),
md(r"""
```{solution-start} ex-batched-encode
:class: dropdown
```
Keep a group and its number of texts; close the group when the next request does not fit; hand out rows
by a running offset:
"""),
code(r"""
def solution_batched_encode(requests, encode, max_batch):
    out, group, n = [], [], 0

    def run(group):
        vectors, start = encode([t for r in group for t in r]), 0
        for r in group:
            out.append(vectors[start:start + len(r)])
            start += len(r)

    for request in requests:
        if group and n + len(request) > max_batch:
            run(group)
            group, n = [], 0
        group.append(request)
        n += len(request)
    if group:
        run(group)
    return out


check_batched_encode(solution_batched_encode)
"""),
md(r"""
```{solution-end}
```

## Projects

Each project starts with code that runs; where it ends is yours.

### 1. A Chinese embedding model

The data folder holds four Chinese sets: Chinese STS-B, OCNLI triplets, CMRC 2018 as a retrieval task
and Toutiao headline topics. MiniLM cannot read them: its English vocabulary maps most Chinese characters
to one unknown token. The start below builds a vocabulary of the characters in the Chinese *training* sets,
trains a small BERT from scratch on OCNLI triplets ({glue:text}`zh_steps` steps of {glue:text}`zh_batch`)
and scores it on the Chinese STS-B test set before and after (one seed: a start, not a result):
"""),
code(r"""
# training on a CPU: the last digit can differ between CPU types
ZH_STEPS, ZH_BATCH = 150, 64
zh = chinese_start(steps=ZH_STEPS, batch_size=ZH_BATCH)
print(show_table([{"tokenizer": k, "unknown tokens in STS-B-zh test": f"{v:.1%}"}
                  for k, v in zh["unknown_share"].items()]))
print(f"character vocabulary: {zh['vocab_size']:,} tokens from {zh['settings']['triplets']:,} OCNLI triplets "
      "and the STS-B-zh training pairs")
print(show_table([{"model": k, "STS-B-zh test Spearman": v} for k, v in zh["spearman"].items()]))
for name in ("trained_minus_untrained", "trained_minus_minilm"):
    t = zh[name]
    print(f"{name}: {t['diff']:+.3f} [{t['ci_low']:+.3f}, {t['ci_high']:+.3f}], p = {t['p']:.3f}")
glue("zh_steps", ZH_STEPS)
glue("zh_batch", ZH_BATCH)
glue("zh_unk_minilm", f"{zh['unknown_share']['MiniLM (English WordPiece)']:.0%}")
glue("zh_unk_chars", f"{zh['unknown_share']['character vocabulary']:.1%}")
for k, v in zh["spearman"].items():
    glue(f"zh_rho_{k.lower()}", round(v, 3))
glue("zh_gain", interval(zh["trained_minus_untrained"]))
""", tags=["nbval-ignore-output"]),
md(r"""
MiniLM's tokenizer turns {glue:text}`zh_unk_minilm` of the test set's tokens into the unknown token,
and scores Spearman {glue:text}`zh_rho_minilm`; the character vocabulary leaves {glue:text}`zh_unk_chars`
unknown. The *untrained* character model already scores {glue:text}`zh_rho_untrained`: with random
weights, two sentences that share characters still get similar mean vectors, which is lexical overlap,
the same signal BM25 uses. Training adds {glue:text}`zh_gain` (to {glue:text}`zh_rho_trained`). Where to
go from there: more steps and a larger model on a GPU; CoSENT on the STS-B-zh training pairs (Part 2) and
the four-task recipe of Part 4 with CMRC 2018 and Toutiao; MRL (4.5) for short vectors; and a multilingual
pre-trained starting point where a network exists.

### 2. A domain model on your own collection

Write your collection as a BEIR folder (`corpus.jsonl`, `queries.jsonl`, `qrels/train.tsv`,
`qrels/test.tsv`; `embedlessons.own_data.save_beir_folder` writes one from Python objects) and run the
pipeline of section 5.1:

```bash
python -m embedlessons.pipeline --data path/to/my_collection --out runs/mine
```

It fine-tunes MiniLM on the training judgements, scores BM25, MiniLM and the fine-tuned model on the test
judgements with paired intervals, and saves a model that sentence-transformers loads. Then try the three
stages of section 5.3 on it, and check the data first for duplicates and leakage (5.2).

### 3. An embedding service

Start the service on your model and corpus, and load-test it:

```bash
python -m embedlessons.serve --model runs/mine/model --corpus path/to/my_collection --port 8000
python bench/load_test.py --url http://127.0.0.1:8000 --concurrency 1 4 16 --requests 200
```

Then export the model to ONNX with int8 weights (`embedlessons.onnx_export`), serve that folder instead, and measure again.

## Takeaways

- Measure before choosing: off the shelf, fine-tuned, multi-task and MRL each change the scores by the
  amounts in the table, with intervals; take the step whose gain your use needs.
- A model is deployed when a runtime other than PyTorch gives its vectors: pooling and normalisation are
  part of the model.
- A new language starts with the vocabulary: count the unknown tokens first.
"""),
code(r"""
# the claims of this section
assert full["vs_minilm"]["dense"]["ci_low"] > 0                                   # fine-tuning gains
assert multi["retrieval"]["ci_high"] < 0 < multi["classification"]["ci_low"]      # multi-task is a trade
assert mrl64["ci_low"] > 0                                                         # MRL helps at 64 dims
assert zh["unknown_share"]["MiniLM (English WordPiece)"] > 0.5 > 0.01 > zh["unknown_share"]["character vocabulary"]
assert zh["trained_minus_untrained"]["ci_low"] > 0 and zh["trained_minus_minilm"]["ci_low"] > 0

assert check_pooling_head(solution_pooling_head) and not check_pooling_head(mean_of_all_positions)
assert check_batched_encode(solution_batched_encode) and not check_batched_encode(chunks_of_texts)
print("all claims hold")
"""),
]
write("/work/main/notebooks/part5/5_8_summary_projects.ipynb", cells)
