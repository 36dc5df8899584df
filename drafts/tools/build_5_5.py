import sys
sys.path.insert(0, "/work/main/drafts/tools")
from nbtools import md, code, colab, write

cells = [
md(r"""
# 5.5 Deployment

A trained model is a folder: section 5.1 saved one and loaded it again in sentence-transformers. Deploying it
asks for more. Other programs must get the *same* vectors without the training code, as fast as the hardware
allows, through an interface they can call, and the whole thing must keep working when many calls arrive at
once. This section takes all-MiniLM-L6-v2 through those steps and measures each one:

1. **one graph**: the model exported to ONNX {cite}`onnx`, pooling and normalisation included, checked
   against PyTorch on real texts of every length;
2. **faster**: the graph optimised and its weights quantised to int8 {cite}`jacob2018quantization`, with
   the speed gained and the quality lost measured on SciFact and STS-B;
3. **a service**: `/embed` and `/search` over HTTP, with limits and clear errors for bad input;
4. **under load**: throughput and tail latency with many clients, with and without request batching.
"""),
colab(),
code(r"""
import tempfile
from contextlib import ExitStack
from pathlib import Path

import httpx
import matplotlib.pyplot as plt
import numpy as np
import onnx

from embedlessons.book import glue, show_table
from embedlessons.experiments.part3 import paired_test
from embedlessons.experiments.part5_deployment import (
    bad_request_tour,
    latency_ratio,
    load_test_rows,
    serving_collection,
    texts_of_every_length,
)
from embedlessons.loadtest import load_test, start_service
from embedlessons.models import load_model
from embedlessons.onnx_export import (
    OnnxEncoder,
    export_onnx,
    parity,
    quantize_int8,
)
from embedlessons.own_data import load_retrieval_folder
from embedlessons.recorded import cpu_flags, load_result
from embedlessons.stats import verdict

work = Path(tempfile.mkdtemp(prefix="deploy_"))
"""),
md(r"""
## The model as one graph

PyTorch runs a model by executing Python code; a deployed model should not need that code. ONNX is a file
format for a computation graph (the operations, their order and the weights), and ONNX Runtime
{cite}`onnxruntime` executes such a file from Python, C++, C#, Java or JavaScript.

What must be in the graph? Everything between the token ids and the vector the application uses. For
MiniLM that is the transformer, **mean pooling** over the real tokens (the attention mask decides which
positions count) and **L2 normalisation**. sentence-transformers' own ONNX export
{cite}`st_efficiency` covers the transformer only: pooling and normalisation stay in Python, and whoever
calls the file from another language has to write them again and get them exactly right.
`export_onnx` puts them inside, with batch and sequence length as *dynamic* axes (any number of texts, any
length up to the model's limit):
"""),
code(r"""
model = load_model("all-MiniLM-L6-v2")
export = export_onnx(model, work / "minilm_onnx")

graph = onnx.load(str(export / "model.onnx")).graph


def axes(value):
    return [
        d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim
    ]


for kind, values in (("input", graph.input), ("output", graph.output)):
    for v in values:
        print(f"{kind:7s}{v.name:20s}{axes(v)}")
print("files:", sorted(p.name for p in export.iterdir()))
"""),
md(r"""
`batch` and `sequence` are names, not numbers: the axes are dynamic. The folder holds the graph, the
tokenizer and a small file with the pooling, normalisation and token limit, so it is all a runtime needs.

**Does it give the same vectors?** A check on a few short sentences can miss what goes wrong with long
texts (truncation) or with texts of mixed lengths in one batch (padding, which the pooling must ignore).
So the check uses {glue:text}`parity_n` real SciFact texts spread over every length, from
{glue:text}`parity_shortest` tokens to {glue:text}`parity_longest` (cut at the model's limit of
{glue:text}`max_length`), encoded in mixed batches by PyTorch and by ONNX Runtime:
"""),
code(r"""
MAX_LENGTH = model.max_length
texts = texts_of_every_length(model.tokenizer, n=32, max_length=MAX_LENGTH)
tokens = [len(t) for t in model.tokenizer(texts, verbose=False)["input_ids"]]
fp32 = OnnxEncoder(export, threads=1)
check = parity(model, fp32, texts)
print(f"{check['n']} texts, {min(tokens)} to {max(tokens)} tokens")
# float32 rounding; the exact gap varies with the kernels used
DIFF_BOUND = 1e-6
print(
    f"lowest cosine {check['min_cosine']:.7f}, largest |difference| "
    f"{'below' if check['max_abs_diff'] < DIFF_BOUND else 'is'} "
    f"{max(check['max_abs_diff'], DIFF_BOUND):.0e}"
)
glue("parity_n", check["n"])
glue("parity_shortest", min(tokens))
glue("parity_longest", max(tokens))
glue("max_length", MAX_LENGTH)
glue("parity_min_cos", f"{check['min_cosine']:.6f}")
glue("parity_max_diff", f"{max(check['max_abs_diff'], DIFF_BOUND):.0e}")
"""),
md(r"""
The lowest cosine between the two vectors of a text is {glue:text}`parity_min_cos` and no coordinate differs
by more than {glue:text}`parity_max_diff`: float32 rounding, as a different order of the same additions
gives. The export *is* the model.

## Faster: graph optimisation and int8 weights

Two changes make the graph cheaper to run on a CPU:

- **Graph optimisation** fuses groups of operations into one kernel (the attention block, layer
  normalisation, the GELU activation), so fewer intermediate tensors are written and read. The arithmetic
  is the same.
- **int8 quantisation** {cite}`jacob2018quantization` stores each weight matrix as 8-bit integers with a
  scale, $W \approx s \cdot W_{\text{int8}}$, a quarter of the bytes of float32; *dynamic* quantisation also
  turns each layer's input into int8 at run time, so the matrix products run in integer arithmetic. With
  one scale per matrix (*per tensor*), a single large weight sets the step size for all the others; with
  one scale per output column (*per channel*), each column gets a step that fits it.

The cosine to the float32 vectors shows what each kind of rounding costs on the same texts:
"""),
code(r"""
# int8 kernels round differently on different CPUs: the int8 digits below vary by machine
variants = {
    "int8 per tensor": quantize_int8(
        export, work / "int8_pt", per_channel=False
    ),
    "int8 per channel": quantize_int8(
        export, work / "int8_pc", per_channel=True
    ),
}
mb = lambda path: Path(path).stat().st_size / 1e6


def alone_vs_batched(encoder):
    # lowest cosine: each text encoded on its own vs inside the mixed batches
    alone = np.vstack([encoder.encode([t]) for t in texts])
    batched = encoder.encode(texts)
    return float((alone * batched).sum(1).min())


rows, int8_checks, companions = [], {}, {"fp32": alone_vs_batched(fp32)}
rows.append(
    {
        "graph": "fp32",
        "size MB": mb(export / "model.onnx"),
        "lowest cosine": check["min_cosine"],
        "alone vs batched": companions["fp32"],
    }
)
for name, path in variants.items():
    encoder = OnnxEncoder(path, threads=1)
    int8_checks[name] = parity(model, encoder, texts)
    companions[name] = alone_vs_batched(encoder)
    rows.append(
        {
            "graph": name,
            "size MB": mb(path),
            "lowest cosine": int8_checks[name]["min_cosine"],
            "alone vs batched": companions[name],
        }
    )
print(show_table(rows, floatfmt=".4g"))
size_ratio = mb(export / "model.onnx") / mb(variants["int8 per channel"])
glue("size_ratio", f"{size_ratio:.1f}")
glue("cos_pt", f"{int8_checks['int8 per tensor']['min_cosine']:.4f}")
glue("cos_pc", f"{int8_checks['int8 per channel']['min_cosine']:.4f}")
glue("alone_pc", f"{companions['int8 per channel']:.4f}")
glue("alone_fp32", f"{companions['fp32']:.6f}")
""", tags=["nbval-ignore-output"]),
md(r"""
The int8 file is {glue:text}`size_ratio` times smaller (biases and layer norms stay in float32). Its
vectors are no longer equal to the model's: the lowest cosine ("lowest cosine", against PyTorch) is
{glue:text}`cos_pc` per channel and {glue:text}`cos_pt` per tensor. Whether that matters is a question for
the metrics, not the cosines.

The last column shows a less obvious cost. *Dynamic* quantisation picks the scale of each layer's input
from the whole batch, so an int8 vector depends on which texts share its batch: encoded alone and inside a
batch, the same text's vectors have a cosine as low as {glue:text}`alone_pc` (per channel). The float32
graph gives the same vector either way (lowest cosine {glue:text}`alone_fp32`: padding is masked and
changes nothing). A service that batches requests (below) serves int8 vectors that vary slightly with the
traffic; where a text must always get the same vector (a cache, a deduplication check), serve float32, or
encode such texts on their own.

### Speed and quality, measured

Timing needs more texts and repeated passes than a notebook should spend, so it is a recorded experiment:
`onnx_comparison` exports the model, builds every variant, and encodes the same SciFact abstracts with each,
alternating variants within each pass so that anything else on the machine slows all of them alike (the best
of three passes counts). Every variant then encodes the SciFact test claims and a corpus of those abstracts
plus every judged one for NDCG@10, and the STS-B test pairs for Spearman's $\rho$. The baseline is
sentence-transformers' own `encode` in float32, on the same thread budget.
"""),
code(r"""
onnx_run = load_result("onnx_speed_quality")
s = onnx_run["settings"]
names = {
    "st_fp32": "sentence-transformers fp32",
    "torch_fp32": "our PyTorch fp32",
    "onnx_fp32": "ONNX fp32",
    "onnx_optimized": "ONNX optimised",
    "onnx_int8_per_tensor": "ONNX int8 per tensor",
    "onnx_int8_per_channel": "ONNX int8 per channel",
}
vs_torch = {
    v: paired_test(
        onnx_run["per_query"][v], onnx_run["per_query"]["torch_fp32"]
    )
    for v in names
}
rows = [
    {
        "variant": label,
        "texts/s": round(onnx_run["throughput"][v], 1),
        "x ST": round(onnx_run["speedup_vs_st"][v], 2),
        "NDCG@10": round(onnx_run["ndcg"][v], 4),
        "STS-B rho": round(onnx_run["sts_spearman"][v], 4),
        "MB": round(onnx_run["sizes_mb"][v]),
    }
    for v, label in names.items()
]
print(show_table(rows, floatfmt=".4g"))
run = onnx_run["runs"][0]
print(
    f"{s['n_docs']} abstracts at {s['max_length']} tokens, "
    f"batch {s['batch_size']}, "
    f"{s['threads']} thread; recorded {run['date']} by\n  {run['command']}"
)
glue("onnx_docs", s["n_docs"])
glue("onnx_threads", s["threads"])
glue("onnx_queries", s["n_queries"])
best = "onnx_int8_per_channel"
glue("speed_pc", f"{onnx_run['speedup_vs_st'][best]:.2f}")
glue("speed_pt", f"{onnx_run['speedup_vs_st']['onnx_int8_per_tensor']:.2f}")
glue("speed_fp32", f"{onnx_run['speedup_vs_st']['onnx_fp32']:.2f}")
glue("speed_opt", f"{onnx_run['speedup_vs_st']['onnx_optimized']:.2f}")
interval = (
    lambda t: f"{t['diff']:+.4f} [{t['ci_low']:+.4f}, {t['ci_high']:+.4f}]"
)
glue("ndcg_pc", interval(vs_torch[best]))
glue("ndcg_pt", interval(vs_torch["onnx_int8_per_tensor"]))
glue(
    "verdict_pc",
    verdict(
        vs_torch[best]["ci_low"],
        vs_torch[best]["ci_high"],
        "a measurable loss",
    ),
)
glue(
    "verdict_pt",
    verdict(
        vs_torch["onnx_int8_per_tensor"]["ci_low"],
        vs_torch["onnx_int8_per_tensor"]["ci_high"],
        "a measurable loss",
    ),
)
sts_drop = {
    v: onnx_run["sts_spearman"][v] - onnx_run["sts_spearman"]["torch_fp32"]
    for v in names
}
glue("sts_pc", f"{sts_drop[best]:+.4f}")
glue("sts_pt", f"{sts_drop['onnx_int8_per_tensor']:+.4f}")
"""),
code(r"""
# the integer dot-product instructions of the CPU executing this page (they differ by machine)
int8 = cpu_flags(("avx512_vnni", "avx_vnni", "amx_int8"))["flags"]
glue("cpu_flags", ", ".join(f for f, has in int8.items() if has) or "none")
""", tags=["nbval-ignore-output"]),
code(r"""
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
order = list(names)
ax1.barh(
    [names[v] for v in order],
    [onnx_run["speedup_vs_st"][v] for v in order],
    color="tab:blue",
)
ax1.axvline(1, color="black", lw=0.8)
ax1.set_xlabel("encoding speed vs sentence-transformers fp32")
ax1.invert_yaxis()
diff = [vs_torch[v]["diff"] for v in order]
err = [
    [d - vs_torch[v]["ci_low"] for v, d in zip(order, diff)],
    [vs_torch[v]["ci_high"] - d for v, d in zip(order, diff)],
]
ax2.errorbar(
    diff, range(len(order)), xerr=err, fmt="o", color="tab:red", capsize=3
)
ax2.axvline(0, color="black", lw=0.8)
ax2.set_yticks(range(len(order)), [""] * len(order))
ax2.invert_yaxis()
ax2.set_xlabel("NDCG@10 minus our PyTorch fp32 (paired 95% interval)")
fig.tight_layout()
plt.show()
"""),
md(r"""
On {glue:text}`onnx_threads` CPU thread, encoding {glue:text}`onnx_docs` abstracts:

- the float32 graphs run at {glue:text}`speed_fp32` (plain) and {glue:text}`speed_opt` (optimised) times
  the speed of sentence-transformers: with batches of long texts, ONNX Runtime and PyTorch spend their time
  in the same kind of float32 matrix kernels, and the Python overhead that the graph removes is small;
- int8 per channel reaches {glue:text}`speed_pc` times, and changes NDCG@10 on the
  {glue:text}`onnx_queries` test claims by {glue:text}`ndcg_pc` against our float32 model (paired
  randomisation test and bootstrap interval of section 5.4: {glue:text}`verdict_pc`), STS-B Spearman by
  {glue:text}`sts_pc`;
- int8 per tensor is about as fast ({glue:text}`speed_pt` times) and changes NDCG@10 by
  {glue:text}`ndcg_pt` ({glue:text}`verdict_pt`), STS-B by {glue:text}`sts_pt`.

Per-channel scales are the safer default: the same speed for less rounding. How much int8 gains depends on
the CPU: fast int8 matrix products need integer dot-product instructions (VNNI on x86). Of those, the CPU
that executed this page has: {glue:text}`cpu_flags`; the recorded run's CPU may differ. The rounding of
int8 kernels differs between CPUs too, so the int8 cosines and scores printed on this page change in their
last digits from machine to machine. Measure on the machine that will serve.

## A service

The service is one command. It loads a model folder (a PyTorch model, or an ONNX export like the one above,
which it then runs with ONNX Runtime), encodes the collection given by `--corpus` into a FAISS index
{cite}`johnson2019faiss` (exact inner-product search), and listens on the loopback address only:

```bash
python -m embedlessons.serve --model DIR_OR_NAME --corpus NAME_OR_PATH --host 127.0.0.1 --port 8000
```

- `POST /embed` with `{"texts": [...], "normalize": true}` returns `{"embeddings": [[...], ...], "dim": d}`;
- `POST /search` with `{"query": "...", "k": 10}` returns the top-$k$ documents with their scores;
- `GET /health` answers 200 once the model and the index are ready (503 before), with counters.

Here it serves the int8 per-channel graph over a small collection: the first {glue:text}`serve_queries`
SciFact test claims' abstracts and random others, {glue:text}`serve_docs` in all. `start_service` runs the
command above as a subprocess and waits for `/health`:
"""),
code(r"""
SERVE_QUERIES, SERVE_DOCS = 40, 200
collection = serving_collection(
    work / "collection", n_queries=SERVE_QUERIES, n_docs=SERVE_DOCS
)
glue("serve_queries", SERVE_QUERIES)
glue("serve_docs", SERVE_DOCS)
running = ExitStack()  # keeps the service up until running.close()
url = running.enter_context(
    start_service(
        variants["int8 per channel"],
        corpus=collection,
        extra_args=["--threads", "1"],
    )
)
client = running.enter_context(
    httpx.Client(base_url=url, timeout=30.0, trust_env=False)
)
health = client.get("/health").json()
print({k: health[k] for k in ("status", "dim", "docs", "batching")})
"""),
code(r"""
# the int8 model serves here, so the scores' last digits vary by CPU (see above)
claim = "Vitamin D deficiency is unrelated to birth weight."
reply = client.post(
    "/embed", json={"texts": [claim, "Birth weight and vitamin D"]}
).json()
vectors = np.array(reply["embeddings"])
print(
    f"/embed: {vectors.shape[0]} vectors of dim {reply['dim']}, "
    f"norms {np.linalg.norm(vectors, axis=1).round(4)}"
)
int8 = OnnxEncoder(variants["int8 per channel"], threads=1)
same_batch = int8.encode([claim, "Birth weight and vitamin D"])[0]
print(
    "cosine to the int8 encoder on the same two texts: "
    f"{float(vectors[0] @ same_batch):.6f}"
)
hits = client.post("/search", json={"query": claim, "k": 3}).json()["results"]
for hit in hits:
    print(f"/search: {hit['score']:.3f}  {hit['title'][:62]}")
""", tags=["nbval-ignore-output"]),
md(r"""
The vectors come back normalised and equal to those of the int8 encoder given the same batch. A service also meets requests that are
wrong: an empty list, a string instead of a list, an unknown field, too many texts, a text or a body too
large, a $k$ out of range. Each must get a JSON error that says what is wrong, with the status code that
tells a client whether to fix its request (422: the request does not have the expected shape; 413: it is
too large), and none may stop the server:
"""),
code(r"""
tour = bad_request_tour(url)
print(
    show_table(
        [{k: r[k] for k in ("request", "status", "error")} for r in tour]
    )
)
alive = client.get("/health")
print(f"\nafter {len(tour)} bad requests, /health answers {alive.status_code}")
assert all(r["ok"] for r in tour) and alive.status_code == 200
"""),
md(r"""
## Under load

A service is judged by what its clients see when many of them call at once. A **closed-loop load test**
keeps a fixed number of clients busy: each sends a request, waits for the reply and sends the next. It
measures

- **throughput**: requests answered per second;
- **latency** per request, summarised by percentiles: **p50** (the median: half the requests were
  faster) and **p99** (99% were at least this fast: the *tail* that the unluckiest users see).

For example, take {glue:text}`ex_n` requests that took 10 ms each except one that took 200 ms:

"""),
code(r"""
example = np.array([10.0] * 99 + [200.0])
p50, p99 = np.percentile(
    example, [50, 99]
)  # linear interpolation between ranks
print(
    f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
    f"mean {example.mean():.1f} ms, max {example.max():.0f} ms"
)
glue("ex_n", len(example))
glue("ex_p50", f"{p50:.0f}")
glue("ex_p99", f"{p99:.1f}")
"""),
md(r"""
The median stays at {glue:text}`ex_p50` ms; p99, which lies 1% of the way from the 99th to the 100th
fastest request, is {glue:text}`ex_p99` ms. One slow request in a hundred moves the tail, not the median,
and a p99 over thousands of requests describes what one user in a hundred waits.

**Request batching.** A transformer's cost per text falls when texts share a forward pass (one large
matrix product instead of many small ones). The service therefore collects the texts of requests that
arrive within a few milliseconds of each other and encodes them together, up to a maximum batch
(`--batch-window-ms`, `--max-batch`; `--no-batching` turns it off). A short run against the service
above, at two client counts (timings vary from run to run):
"""),
code(r"""
claims = list(load_retrieval_folder(collection).queries.values())
live = [load_test(url, claims, concurrency=c, requests=48) for c in (1, 8)]
print(
    show_table(
        [
            {
                "clients": r["concurrency"],
                "req/s": round(r["throughput_rps"], 1),
                "p50 ms": round(r["p50_ms"], 1),
                "p99 ms": round(r["p99_ms"], 1),
                "texts/pass": round(r["texts_per_forward_pass"], 1),
                "errors": r["errors"],
            }
            for r in live
        ]
    )
)
""", tags=["nbval-ignore-output"]),
code(r"""
running.close()  # stops the client and the service
"""),
md(r"""
With more clients, each forward pass carries several texts. Whether that pays is measured in the recorded
load test: the service with MiniLM in PyTorch, given {glue:text}`lt_threads` thread (so both modes have
the same compute), SciFact's test claims as requests, {glue:text}`lt_requests` requests at each client
count, with and without batching:
"""),
code(r"""
lt = load_result("service_load_test")
print(show_table(load_test_rows(lt["rows"]), floatfmt=".4g"))
run = lt["runs"][0]
print(
    f"recorded {run['date']} on {run['machine']['cpu_count']} cores by\n"
    f"  {run['command']}"
)
levels = lt["settings"]["concurrencies"]
ratios = {
    c: latency_ratio(
        lt["per_query"][f"batched_c{c}"], lt["per_query"][f"plain_c{c}"]
    )
    for c in levels
}
glue("lt_threads", lt["settings"]["server_threads"])
glue("lt_requests", lt["settings"]["requests"])
glue("lt_errors", sum(r["errors"] for r in lt["rows"]))
top = max(levels)
glue("lt_top", top)
def ratio_text(r):
    return f"{r['ratio']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}]"


glue("lt_ratio_top", ratio_text(ratios[top]))
glue("lt_ratio_one", ratio_text(ratios[1]))
by = {(r["mode"], r["concurrency"]): r for r in lt["rows"]}
glue("lt_pass_top", f"{by[('batched', top)]['texts_per_forward_pass']:.1f}")
glue("lt_p99_batched", f"{by[('batched', top)]['p99_ms']:.0f}")
glue("lt_p99_plain", f"{by[('plain', top)]['p99_ms']:.0f}")
"""),
code(r"""
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.4))
for mode, colour in (("batched", "tab:blue"), ("plain", "tab:orange")):
    rs = [by[(mode, c)] for c in levels]
    label = "batching on" if mode == "batched" else "batching off"
    ax1.plot(
        levels,
        [r["throughput_rps"] for r in rs],
        "o-",
        color=colour,
        label=label,
    )
    ax2.plot(
        levels, [r["p99_ms"] for r in rs], "o-", color=colour, label=label
    )
    ax2.plot(levels, [r["p50_ms"] for r in rs], "o--", color=colour, alpha=0.5)
for ax in (ax1, ax2):
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrent clients")
ax1.set_ylabel("requests / s")
ax2.set_ylabel("latency ms (p99 solid, p50 dashed)")
ax2.set_yscale("log")
ax1.legend()
fig.tight_layout()
plt.show()
"""),
md(r"""
No request failed ({glue:text}`lt_errors` errors in all). With one client there is nothing to batch, and
the batching window only adds waiting: batching on serves {glue:text}`lt_ratio_one` times the requests per
second of batching off (the ratio of mean latencies, which in a closed loop is the ratio of throughputs;
bootstrap 95% interval). At {glue:text}`lt_top` clients each forward pass carries {glue:text}`lt_pass_top`
texts on average and batching serves {glue:text}`lt_ratio_top` times the requests per second. The tail is
another matter: p99 is {glue:text}`lt_p99_batched` ms with batching against {glue:text}`lt_p99_plain` ms
without it. More requests per second do not by themselves mean a shorter wait for the slowest request, so
a load test reports both, and the batching window is a setting to tune on the traffic the service will see.

## Takeaways

- Put pooling and normalisation into the exported graph, then check it on real texts of every length
  against the model: the export must *be* the model.
- int8 with per-channel scales is the cheap speed-up on a CPU; measure its quality cost on your own
  metric, not on cosines.
- A service needs limits and clear errors as much as speed; request batching pays in throughput once
  requests arrive together, and its effect on the tail must be measured too.
- Dynamic int8 makes a text's vector depend on its batch companions: fine for search, not for an exact
  cache.
"""),
code(r"""
# the claims of this section
# the export is the model: float32 rounding only
assert check["min_cosine"] >= 0.9999 and check["max_abs_diff"] < 1e-4
# short texts and texts past the token limit were both checked
assert min(tokens) < 16 and max(tokens) >= MAX_LENGTH
# per-channel int8 rounds less than per-tensor; int8 weights are ~4x smaller
int8_cos = {k: v["min_cosine"] for k, v in int8_checks.items()}
assert int8_cos["int8 per channel"] > int8_cos["int8 per tensor"]
assert size_ratio > 3
# dynamic int8 depends on the batch companions, float32 does not
assert companions["fp32"] > 0.99999 > 0.999 > companions["int8 per channel"]
# the service returns its encoder's vectors and survives every bad request
assert float(vectors[0] @ same_batch) > 0.99999
assert all(r["ok"] for r in tour) and alive.status_code == 200
# recorded: int8 is faster than sentence-transformers fp32, little NDCG lost
assert onnx_run["speedup_vs_st"][best] > 1.5
assert abs(vs_torch[best]["diff"]) < 0.02
# load tests without errors; batching shares passes, costs at 1 client and
# pays at many (intervals of the throughput ratio on either side of 1)
assert all(r["errors"] == 0 for r in live)
assert sum(r["errors"] for r in lt["rows"]) == 0
assert by[("batched", top)]["texts_per_forward_pass"] > 2
assert ratios[1]["ci_high"] < 1 < ratios[top]["ci_low"]
print("all claims hold")
"""),
]
write("/work/main/notebooks/part5/5_5_deployment.ipynb", cells)
