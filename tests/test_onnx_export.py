"""ONNX export of a whole bi-encoder (transformer + pooling + normalisation): parity with PyTorch for every pooling
on texts from one word to past max_length and at batch sizes other than the traced one, the graph's inputs,
output and dynamic axes, the optimised and int8 copies, OnnxEncoder as a drop-in for evaluators and the service,
the error messages, the tiny recorded comparison, and MiniLM on real SciFact abstracts."""
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from embedlessons.data import load_retrieval
from embedlessons.models import load_model, small_bert
from embedlessons.onnx_export import (ONNX_CONFIG, ONNX_FILE, OnnxEncoder, export_onnx, onnx_comparison,
                                      optimize_onnx, parity, quantize_int8)

pytestmark = pytest.mark.usefixtures("one_thread")

MAX_LENGTH = 16
TEXTS = ["cells", "Hello there.", "A medium length sentence about proteins and the cells that make them.",
         " ".join(["mitochondria"] * 60),                     # far past MAX_LENGTH tokens: truncated
         "DNA", "Two words", "word " * 13, "Short claim about vitamin D and bone density in adults."]


def tiny(pooling="mean", normalize=True, seed=0):
    return small_bert(num_layers=1, hidden_size=32, num_heads=2, intermediate_size=64, pooling=pooling,
                      normalize=normalize, max_length=MAX_LENGTH, seed=seed)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """(model, export folder) for mean/cls/max pooling (normalised) and mean without normalisation."""
    root = tmp_path_factory.mktemp("onnx")
    out = {}
    for pooling, normalize in (("mean", True), ("cls", True), ("max", True), ("mean", False)):
        model = tiny(pooling, normalize)
        out[pooling, normalize] = model, export_onnx(model, root / f"{pooling}_{normalize}")
    return out


@pytest.fixture(scope="module")
def variants(exports, tmp_path_factory):
    """The mean-pooling export with its optimised and int8 (per-channel, per-tensor) copies."""
    model, folder = exports["mean", True]
    root = tmp_path_factory.mktemp("variants")
    return {"model": model, "fp32": folder, "optimized": optimize_onnx(folder, root / "optimized"),
            "int8": quantize_int8(folder, root / "int8"),
            "int8_per_tensor": quantize_int8(folder, root / "int8_pt.onnx", per_channel=False)}


# ------------------------------------------------------------------------------------------ parity
@pytest.mark.parametrize("key", [("mean", True), ("cls", True), ("max", True), ("mean", False)],
                         ids=["mean", "cls", "max", "mean-unnormalised"])
def test_parity_with_pytorch_for_each_pooling_and_batch_size(exports, key):
    model, folder = exports[key]
    assert len(model.tokenizer(TEXTS[3])["input_ids"]) > MAX_LENGTH         # truncation is exercised
    encoder = OnnxEncoder(folder, threads=1)
    assert (encoder.pooling, encoder.normalize, encoder.max_length, encoder.dim) == (key[0], key[1], MAX_LENGTH, 32)
    for batch_size in (1, 3, 8):                                           # the graph was traced at batch 2
        stats = parity(model, encoder, TEXTS, batch_size=batch_size)
        assert stats["n"] == len(TEXTS)
        assert stats["min_cosine"] >= 0.9999, stats
        assert stats["max_abs_diff"] < 1e-5, stats                         # measured ~6e-8
    # a shorter token limit than the export's works too (the sequence axis is dynamic)
    assert parity(model, encoder, TEXTS, max_length=5)["max_abs_diff"] < 1e-5
    # the output differs between poolings: each graph holds its own pooling
    if key != ("mean", True):
        other = OnnxEncoder(exports["mean", True][1]).encode(TEXTS)
        assert not np.allclose(encoder.encode(TEXTS), other, atol=1e-3)


def test_encode_keeps_input_order_and_repeated_texts(exports):
    model, folder = exports["mean", True]
    encoder = OnnxEncoder(folder)
    texts = TEXTS + TEXTS[:3]
    vectors = encoder.encode(texts, batch_size=3)
    assert vectors.shape == (len(texts), 32) and vectors.dtype == np.float32
    np.testing.assert_array_equal(vectors[len(TEXTS):], vectors[:3])
    one_by_one = np.vstack([encoder.encode([t]) for t in TEXTS])
    np.testing.assert_allclose(vectors[:len(TEXTS)], one_by_one, atol=1e-6)


# ------------------------------------------------------------------------------------------ the graph
def test_graph_holds_pooling_and_normalisation_with_dynamic_axes(exports):
    for (pooling, normalize), (model, folder) in exports.items():
        graph = onnx.load(str(folder / ONNX_FILE)).graph
        inputs = {i.name: i.type.tensor_type for i in graph.input}
        assert list(inputs) == ["input_ids", "attention_mask", "token_type_ids"]   # what MiniLM's tokenizer returns
        for t in inputs.values():
            assert t.elem_type == onnx.TensorProto.INT64
            assert [d.dim_param for d in t.shape.dim] == ["batch", "sequence"]
        [output] = graph.output
        assert output.name == "sentence_embedding"
        dims = output.type.tensor_type.shape.dim
        assert dims[0].dim_param == "batch" and dims[1].dim_value == 32 and len(dims) == 2
        ops = {n.op_type for n in graph.node}
        assert ("ReduceMax" in ops) == (pooling == "max")
        assert ("ReduceL2" in ops or "LpNormalization" in ops) == normalize
        # run the bare graph: [B, dim] out, unit norms exactly when normalised
        session = ort.InferenceSession(str(folder / ONNX_FILE), providers=["CPUExecutionProvider"])
        batch = model.tokenizer(TEXTS[:5], padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="np")
        out = session.run(None, {k: v.astype(np.int64) for k, v in batch.items()})[0]
        assert out.shape == (5, 32)
        norms = np.linalg.norm(out, axis=1)
        assert np.allclose(norms, 1, atol=1e-5) == normalize
        config = json.loads((folder / ONNX_CONFIG).read_text())
        assert {k: config[k] for k in ("pooling", "normalize", "max_length", "dim", "opset")} == \
            {"pooling": pooling, "normalize": normalize, "max_length": MAX_LENGTH, "dim": 32, "opset": 17}
        assert config["source_fingerprint"] == model.fingerprint()
        assert (folder / "tokenizer.json").exists() and (folder / "tokenizer_config.json").exists()


# ------------------------------------------------------------------------------------------ optimise, int8
def test_optimized_graph_is_fused_and_matches_fp32(variants):
    fp32 = OnnxEncoder(variants["fp32"]).encode(TEXTS)
    optimized = OnnxEncoder(variants["optimized"])
    assert optimized.optimized["method"] == "bert" and optimized.optimized["fused"].get("Attention") == 1
    assert "Attention" in {n.op_type for n in onnx.load(str(variants["optimized"])).graph.node}
    np.testing.assert_allclose(optimized.encode(TEXTS, batch_size=3), fp32, atol=1e-4)
    ort_copy = optimize_onnx(variants["fp32"], variants["optimized"].parent / "ort.onnx", method="ort")
    np.testing.assert_allclose(OnnxEncoder(ort_copy).encode(TEXTS), fp32, atol=1e-4)


def test_int8_per_channel_is_smaller_close_to_fp32_and_self_contained(variants):
    fp32_file = variants["fp32"] / ONNX_FILE
    assert fp32_file.stat().st_size / variants["int8"].stat().st_size > 2.5        # measured ~3.8x
    int8_folder = variants["int8"].parent
    assert (int8_folder / "tokenizer.json").exists()
    int8 = OnnxEncoder(int8_folder)                                                   # the folder alone suffices
    assert int8.quantization == {"method": "dynamic", "weight_type": "int8", "per_channel": True}
    assert OnnxEncoder(variants["fp32"]).quantization is None
    fp32 = OnnxEncoder(variants["fp32"]).encode(TEXTS)
    cos = (int8.encode(TEXTS) * fp32).sum(1)                                          # both unit-norm
    assert cos.min() >= 0.999, cos                                                    # measured 0.99996
    assert not np.allclose(int8.encode(TEXTS), fp32, atol=1e-5)                       # it did quantise
    # per channel: MatMul weights carry one scale per output column; per tensor: one scalar scale each
    scale_shapes = lambda path: [list(i.dims) for i in onnx.load(str(path)).graph.initializer
                                 if i.name.endswith("_scale") and "MatMul" in i.name]
    assert scale_shapes(variants["int8"]) and all(d == [32] or d == [64] for d in scale_shapes(variants["int8"]))
    assert scale_shapes(variants["int8_per_tensor"]) and all(d == [] for d in scale_shapes(variants["int8_per_tensor"]))
    per_tensor = OnnxEncoder(variants["int8_per_tensor"])
    assert per_tensor.quantization["per_channel"] is False
    assert (per_tensor.encode(TEXTS) * fp32).sum(1).min() >= 0.99
    # an optimised (fused) graph quantises too
    fused_int8 = OnnxEncoder(quantize_int8(variants["optimized"], int8_folder / "fused_int8.onnx"))
    assert fused_int8.optimized and fused_int8.quantization
    assert (fused_int8.encode(TEXTS) * fp32).sum(1).min() >= 0.999


# ------------------------------------------------------------------------------------------ drop-in use
def test_evaluator_and_cache_accept_the_onnx_encoder(exports, private_cache, tmp_path):
    from embedlessons.data import ScoredPairs
    from embedlessons.encoding import embedding_cache_dir
    from embedlessons.evaluators import STSEvaluator

    model, folder = exports["mean", True]
    pairs = ScoredPairs("toy", "test", TEXTS[:4], TEXTS[4:], np.array([0.5, 2.0, 1.0, 4.0], dtype=np.float32))
    evaluator = STSEvaluator(pairs, max_length=MAX_LENGTH)
    encoder = OnnxEncoder(folder)
    assert evaluator(encoder)["stsb_spearman"] == pytest.approx(evaluator(model)["stsb_spearman"], abs=1e-6)
    assert encoder.fingerprint() == OnnxEncoder(folder).fingerprint() != model.fingerprint()
    first = encoder.encode(TEXTS, cache=True)
    shards = list((embedding_cache_dir() / f"{encoder.fingerprint()}-{MAX_LENGTH}").glob("*.npz"))
    assert len(shards) == 1
    np.testing.assert_array_equal(encoder.encode(TEXTS, cache=True, device="cpu"), first)
    assert len(list(shards[0].parent.glob("*.npz"))) == 1                             # second call: from the cache


def test_service_main_loads_an_onnx_folder(exports, monkeypatch, tmp_path):
    import uvicorn

    from embedlessons import serve
    from embedlessons.models import BiEncoder

    seen = {}
    monkeypatch.setattr(serve, "create_app", lambda model, *a, **k: seen.setdefault("model", model))
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: None)
    assert serve.main(["--model", str(exports["cls", True][1])]) == 0
    assert isinstance(seen["model"], OnnxEncoder) and seen["model"].pooling == "cls"
    seen.clear()
    int8 = quantize_int8(exports["cls", True][1], tmp_path / "int8.onnx")       # an .onnx file inside an export
    assert serve.main(["--model", str(int8), "--threads", "1"]) == 0
    assert seen["model"].quantization and seen["model"].threads == 1
    seen.clear()
    assert serve.main(["--model", str(tiny().save(tmp_path / "torch_model"))]) == 0   # a PyTorch folder as before
    assert isinstance(seen["model"], BiEncoder)
    with pytest.raises(SystemExit):
        serve.main(["--model", str(int8), "--threads", "0"])


# ------------------------------------------------------------------------------------------ bad input
def test_bad_input_messages(exports, tmp_path):
    model, folder = exports["mean", True]
    encoder = OnnxEncoder(folder)
    with pytest.raises(TypeError, match="not one string"):
        encoder.encode("a bare string")
    with pytest.raises(TypeError, match="every text must be a string"):
        encoder.encode(["fine", 3])
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        encoder.encode(["x"], batch_size=0)
    assert encoder.encode([]).shape == (0, 32)
    with pytest.raises(FileNotFoundError, match=r"no ONNX export at .*expected a folder written by export_onnx"):
        OnnxEncoder(tmp_path / "missing")
    (tmp_path / "no_graph").mkdir()
    (tmp_path / "no_graph" / ONNX_CONFIG).write_text((folder / ONNX_CONFIG).read_text())
    with pytest.raises(FileNotFoundError, match=r"no ONNX graph at .*model.onnx"):
        OnnxEncoder(tmp_path / "no_graph")
    with pytest.raises(FileNotFoundError, match="no ONNX graph"):
        quantize_int8(tmp_path / "no_graph", tmp_path / "q")
    with pytest.raises(ValueError, match="is the source graph itself"):
        quantize_int8(folder, folder)
    with pytest.raises(ValueError, match="already int8-quantised"):
        quantize_int8(quantize_int8(folder, tmp_path / "q1"), tmp_path / "q2")
    with pytest.raises(TypeError, match="export_onnx needs a BiEncoder"):
        export_onnx(model.transformer, tmp_path / "x")
    with pytest.raises(ValueError, match="opset must be an int >= 14"):
        export_onnx(model, tmp_path / "x", opset=11)
    with pytest.raises(ValueError, match="threads must be a positive int"):
        OnnxEncoder(folder, threads=0)


def test_export_refuses_to_mix_exports_unless_overwrite(tmp_path):
    first, second = tiny(seed=0), tiny(seed=1)
    folder = export_onnx(first, tmp_path / "export")
    export_onnx(first, folder)                                              # the same export again: fine
    quantize_int8(folder, folder / "int8.onnx")
    with pytest.raises(FileExistsError, match=r"holds a different export \(differs in \['source_fingerprint'\]\)"):
        export_onnx(second, folder)
    export_onnx(second, folder, overwrite=True)
    assert not (folder / "int8.onnx").exists()                             # stale variant removed
    assert parity(second, OnnxEncoder(folder), TEXTS)["min_cosine"] >= 0.9999
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="is not empty and holds no embedlessons_onnx.json"):
        export_onnx(first, tmp_path / "other")
    before = (folder / ONNX_FILE).read_bytes()
    with pytest.raises(FileExistsError, match="holds the export of a different model"):
        quantize_int8(export_onnx(first, tmp_path / "third"), folder)
    assert (folder / ONNX_FILE).read_bytes() == before                     # refused before writing anything


# ------------------------------------------------------------------------------------------ experiment, MiniLM
def test_tiny_comparison_returns_every_variant(tmp_path):
    path = tiny().save(tmp_path / "tiny")
    r = onnx_comparison(str(path), n_docs=12, batch_size=4, max_length=MAX_LENGTH, threads=1, repeats=1, n_sts=12,
                        n_queries=6, query_max_length=MAX_LENGTH, sts_max_length=MAX_LENGTH)
    names = {"st_fp32", "torch_fp32", "onnx_fp32", "onnx_optimized", "onnx_int8_per_channel", "onnx_int8_per_tensor"}
    assert {"settings", "per_query", "throughput", "sts_spearman", "parity", "sizes_mb"} <= set(r)
    for key in ("per_query", "throughput", "sts_spearman", "parity", "sizes_mb", "ndcg", "speedup_vs_st"):
        assert set(r[key]) == names, key
    assert r["settings"]["n_docs"] == 12 and r["settings"]["n_queries"] == 6
    for v in names:
        assert len(r["per_query"][v]) == 6 and all(0 <= x <= 1 for x in r["per_query"][v].values())
        assert np.isfinite(r["throughput"][v]) and r["throughput"][v] > 0
        assert np.isfinite(r["sts_spearman"][v]) and r["sizes_mb"][v] > 0
        assert all(np.isfinite(x) for x in r["parity"][v].values())
    assert r["parity"]["onnx_fp32"]["min_cosine"] >= 0.9999 and r["parity"]["st_fp32"]["min_cosine"] >= 0.9999
    assert r["per_query"]["onnx_fp32"] == pytest.approx(r["per_query"]["torch_fp32"], abs=1e-6)
    assert r["sizes_mb"]["onnx_fp32"] / r["sizes_mb"]["onnx_int8_per_channel"] > 2.5
    json.dumps(r)                                                           # JSON-ready


def test_minilm_parity_on_scifact_abstracts(tmp_path):
    """The book's claim: the exported MiniLM gives the PyTorch embeddings (cosine >= 0.9999)."""
    model = load_model("all-MiniLM-L6-v2")
    texts = load_retrieval("scifact", "test").doc_texts()[:16] + ["vitamin D", "Aspirin reduces stroke risk."]
    assert max(len(model.tokenizer(t)["input_ids"]) for t in texts) > 128
    encoder = OnnxEncoder(export_onnx(model, tmp_path / "minilm"), threads=1)
    stats = parity(model, encoder, texts, max_length=128, batch_size=8)
    assert stats["min_cosine"] >= 0.9999, stats                            # measured 1 - 1e-13
    assert stats["max_abs_diff"] < 1e-5, stats                             # measured ~2e-7
