"""ONNX export of a whole bi-encoder, graph optimisation, int8 weights, and an encoder that runs it.

A :class:`~embedlessons.models.BiEncoder` is a transformer followed by pooling and (optionally) L2
normalisation. :func:`export_onnx` traces all three into **one** ONNX graph, ``input_ids``,
``attention_mask`` (and ``token_type_ids`` where the tokenizer makes them) -> ``sentence_embedding``
[batch, dim], so the service needs ONNX Runtime and a tokenizer, not PyTorch. :func:`optimize_onnx` fuses
BERT's layers (attention, GELU, layer norm) with ONNX Runtime's optimiser, :func:`quantize_int8` stores the
weights as int8 (dynamic quantisation: activations are quantised on the fly), and :class:`OnnxEncoder`
encodes like ``BiEncoder.encode`` (length-sorted batches, dynamic padding), so evaluators accept it.
:func:`parity` measures how far the exported graph is from PyTorch; :func:`onnx_comparison` is the
recorded experiment of speed, size and quality of every variant.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["ONNX_FILE", "ONNX_CONFIG", "export_onnx", "optimize_onnx", "quantize_int8", "OnnxEncoder", "parity",
           "onnx_comparison"]

#: File names inside an export folder.
ONNX_FILE = "model.onnx"
ONNX_CONFIG = "embedlessons_onnx.json"
_FORMAT = "embedlessons-onnx"
_INPUT_ORDER = ("input_ids", "attention_mask", "token_type_ids")
_OUTPUT = "sentence_embedding"
_TRACE_TEXTS = ["An example sentence of a few words, to trace the graph.", "Short."]


# ------------------------------------------------------------------------------------------------ helpers
def _read_config(folder: Path) -> dict:
    path = folder / ONNX_CONFIG
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} is not a readable {ONNX_CONFIG}: {err}") from err
    if config.get("format") != _FORMAT:
        raise ValueError(f"{path} was not written by embedlessons.onnx_export.export_onnx")
    return config


def _write_config(folder: Path, config: dict) -> None:
    (folder / ONNX_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True))


def _resolve_source(src: str | os.PathLike) -> tuple[Path, Path]:
    """``(folder, onnx file)`` of an export folder or of an ``.onnx`` file inside one."""
    src = Path(src)
    if src.is_dir():
        folder, file = src, src / ONNX_FILE
    elif src.suffix == ".onnx":
        folder, file = src.parent, src
    else:
        raise FileNotFoundError(f"expected an export folder (holding {ONNX_FILE} and {ONNX_CONFIG}, written by "
                                f"export_onnx) or an .onnx file, got {src}" + ("" if src.exists() else
                                                                             " (which does not exist)"))
    if not file.is_file():
        raise FileNotFoundError(f"no ONNX graph at {file}: export the model first (export_onnx(model, folder))")
    if not (folder / ONNX_CONFIG).is_file():
        raise FileNotFoundError(f"{folder} holds no {ONNX_CONFIG}: not a folder written by export_onnx")
    return folder, file


def _resolve_destination(dst: str | os.PathLike, src_folder: Path, src_file: Path) -> tuple[Path, Path]:
    """``(folder, onnx file)`` to write: ``dst`` may be a folder (the graph goes to ``model.onnx``) or an .onnx
    file. Writing over the source graph, or into a folder that holds another model's export, is refused."""
    dst = Path(dst)
    folder, file = (dst.parent, dst) if dst.suffix == ".onnx" else (dst, dst / ONNX_FILE)
    if file.resolve() == src_file.resolve():
        raise ValueError(f"destination {file} is the source graph itself; choose another file or folder")
    if folder.resolve() != src_folder.resolve() and (folder / ONNX_CONFIG).exists():
        theirs = _read_config(folder).get("source_fingerprint")
        if theirs != _read_config(src_folder).get("source_fingerprint"):
            raise FileExistsError(f"{folder} holds the export of a different model ({theirs}); write elsewhere "
                                  f"or delete it")
    folder.mkdir(parents=True, exist_ok=True)
    return folder, file


def _copy_companions(src_folder: Path, dst_folder: Path, dst_file: Path, entry: dict) -> None:
    """Copy the tokenizer files and the json from the source export into ``dst_folder`` (unless they are the same
    folder) and record ``entry`` (what was done to the graph) under ``files`` for ``dst_file``."""
    config = _read_config(src_folder)
    if src_folder.resolve() != dst_folder.resolve():
        files = {}                                   # the source's "files" describe the source folder
        if (dst_folder / ONNX_CONFIG).exists():                # the same model (_resolve_destination checked)
            existing = _read_config(dst_folder)
            files = {k: v for k, v in existing.get("files", {}).items() if (dst_folder / k).exists()}
        for name in config.get("tokenizer_files", []):
            if (src_folder / name).is_file():
                shutil.copy2(src_folder / name, dst_folder / name)
        config["files"] = files
    config.setdefault("files", {})[dst_file.name] = entry
    _write_config(dst_folder, config)


def _file_entry(config: dict, file: Path) -> dict:
    return dict(config.get("files", {}).get(file.name, {"optimized": None, "quantization": None}))


@contextlib.contextmanager
def _eager_attention(transformer):
    """Use the plain (eager) attention while tracing: its Softmax(QK^T + mask)V pattern is what ONNX Runtime's
    BERT optimiser fuses into one ``Attention`` node (the SDPA path exports but is not fused)."""
    config = getattr(transformer, "config", None)
    original = getattr(config, "_attn_implementation", None)
    switch = original not in (None, "eager") and hasattr(transformer, "set_attn_implementation")
    if switch:
        transformer.set_attn_implementation("eager")
    try:
        yield
    finally:
        if switch:
            transformer.set_attn_implementation(original)


def _session(path: Path, threads: int | None, providers: Sequence[str]):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if threads is not None:
        if not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be a positive int or None, got {threads!r}")
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=list(providers))


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(axis=1) / np.clip(norms, 1e-12, None)


def _parity_stats(reference: np.ndarray, other: np.ndarray) -> dict:
    if reference.shape != other.shape:
        raise ValueError(f"embeddings differ in shape: {reference.shape} vs {other.shape}")
    if len(reference) == 0:
        raise ValueError("parity needs at least one text")
    cos = _cosines(reference, other)
    return {"min_cosine": float(cos.min()), "mean_cosine": float(cos.mean()),
            "max_abs_diff": float(np.abs(reference.astype(np.float64) - other).max()), "n": int(len(reference))}


# ------------------------------------------------------------------------------------------------ export
def _check_model(model) -> None:
    from .models import POOLING_MODES

    missing = [a for a in ("transformer", "tokenizer", "pooling", "normalize", "max_length", "dim", "fingerprint")
               if not hasattr(model, a)]
    if missing or not callable(model):
        raise TypeError(f"export_onnx needs a BiEncoder (transformer + tokenizer + pooling), got "
                        f"{type(model).__name__} without {', '.join(missing) or '__call__'}")
    if model.pooling not in POOLING_MODES:
        raise ValueError(f"unknown pooling {model.pooling!r}; choose one of {POOLING_MODES}")


def export_onnx(model, folder: str | os.PathLike, opset: int = 17, overwrite: bool = False) -> Path:
    """Export a bi-encoder (transformer + pooling + L2 normalisation) as one ONNX graph.

    sentence-transformers' own ONNX export (``SentenceTransformer(..., backend="onnx")``) covers only the
    transformer: pooling and normalisation run outside the graph, in PyTorch. Here they are inside, so
    ONNX Runtime alone turns token ids into the final embedding.

    Args:
        model: a :class:`~embedlessons.models.BiEncoder` (any pooling; normalised or not).
        folder: where to write; created if missing. It may already hold an export of the same model and
            settings (rewritten); anything else needs ``overwrite=True``.
        opset: ONNX operator set (>= 14; 17 has ``LayerNormalization``).
        overwrite: write into a folder that holds another export or other files (other ``.onnx`` variants
            of a previous export are deleted; unrelated files are left alone).

    Graph: inputs ``input_ids``, ``attention_mask`` (and ``token_type_ids`` when the tokenizer returns them,
    as MiniLM's does) int64 [batch, sequence]; output ``sentence_embedding`` float32 [batch, dim]; the batch
    and sequence axes are dynamic.

    Writes: ``model.onnx``, the tokenizer files and ``embedlessons_onnx.json`` (pooling, normalize,
    max_length, dim, opset, input names, the source model's fingerprint). Returns the folder.
    """
    import torch
    from torch import nn

    _check_model(model)
    if not isinstance(opset, int) or opset < 14:
        raise ValueError(f"opset must be an int >= 14, got {opset!r}")
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{folder} exists and is not a folder")
    fingerprint = model.fingerprint()
    settings = {"pooling": model.pooling, "normalize": bool(model.normalize), "max_length": int(model.max_length),
                "dim": int(model.dim), "opset": opset, "source_fingerprint": fingerprint}
    stale: list[Path] = []
    if folder.is_dir() and any(folder.iterdir()):
        if (folder / ONNX_CONFIG).exists():
            try:
                old = _read_config(folder)
            except ValueError:
                if not overwrite:
                    raise
                old = {}
            differs = {k: (old.get(k), v) for k, v in settings.items() if old.get(k) != v}
            if differs and not overwrite:
                raise FileExistsError(f"{folder} holds a different export (differs in {sorted(differs)}); "
                                      f"pass overwrite=True to replace it or choose another folder")
            stale = [folder / name for name in old.get("files", {}) if name != ONNX_FILE]
        elif not overwrite:
            raise FileExistsError(f"{folder} exists, is not empty and holds no {ONNX_CONFIG}; pass overwrite=True "
                                  f"to write the export into it anyway")
    folder.mkdir(parents=True, exist_ok=True)

    sample = model.tokenize(_TRACE_TEXTS)
    unknown = sorted(set(sample) - set(_INPUT_ORDER))
    if unknown or "input_ids" not in sample or "attention_mask" not in sample:
        raise ValueError(f"the tokenizer returns {sorted(sample)}; export_onnx handles {_INPUT_ORDER}")
    names = [n for n in _INPUT_ORDER if n in sample]

    class _Graph(nn.Module):
        def __init__(self, encoder):
            super().__init__()
            self.encoder = encoder

        def forward(self, *tensors):
            return self.encoder(dict(zip(names, tensors)))

    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes[_OUTPUT] = {0: "batch"}
    was_training = model.training
    model.eval()
    tmp = folder / f".{ONNX_FILE}.tmp"
    try:
        with _eager_attention(model.transformer), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")       # tracer warnings about Python branches on (traced) shapes
            expected = model(sample).float().cpu().numpy()
            # The TorchScript exporter (dynamo=False). The default dynamo exporter of torch 2.13 exports BERT with
            # its attention mask correctly, but it cannot write opset 17 (its down-conversion from 18 fails and
            # keeps 18), it puts the weights in a separate .data file by default, and ONNX Runtime's BERT
            # optimiser does not fuse its attention: on MiniLM (1 CPU thread) it ran ~15% slower than this graph.
            torch.onnx.export(_Graph(model), tuple(sample[n] for n in names), str(tmp), input_names=names,
                              output_names=[_OUTPUT], dynamic_axes=axes, opset_version=opset, dynamo=False)
        _declare_output_shape(tmp, int(model.dim))
        # check the graph against PyTorch on the tracing batch: a broken export fails here, not in a service
        got = _session(tmp, None, ["CPUExecutionProvider"]).run(
            [_OUTPUT], {n: sample[n].cpu().numpy().astype(np.int64) for n in names})[0]
        if got.shape != expected.shape or not np.allclose(got, expected, atol=1e-3):
            raise RuntimeError(f"the exported graph disagrees with PyTorch on the tracing batch (max abs diff "
                               f"{np.abs(got - expected).max() if got.shape == expected.shape else got.shape})")
        tmp.replace(folder / ONNX_FILE)
    finally:
        model.train(was_training)
        tmp.unlink(missing_ok=True)
    for path in stale:
        path.unlink(missing_ok=True)
    tokenizer_files = [Path(p).name for p in model.tokenizer.save_pretrained(str(folder))]
    config = {"format": _FORMAT, "version": 1, **settings, "inputs": names, "output": _OUTPUT,
              "num_heads": int(getattr(model.transformer.config, "num_attention_heads", 0) or 0),
              "hidden_size": int(getattr(model.transformer.config, "hidden_size", 0) or 0),
              "exporter": f"torch.onnx.export(dynamo=False), torch {torch.__version__}",
              "tokenizer_files": sorted(n for n in tokenizer_files if n != ONNX_CONFIG),
              "files": {ONNX_FILE: {"optimized": None, "quantization": None}}}
    _write_config(folder, config)
    return folder


def _declare_output_shape(path: Path, dim: int) -> None:
    """State the output as [batch, dim] in the graph (the tracer leaves the width as a symbol such as
    'Divsentence_embedding_dim_1', so tools reading the graph would not know the embedding size)."""
    import onnx

    proto = onnx.load(str(path))
    dims = proto.graph.output[0].type.tensor_type.shape.dim
    if len(dims) != 2:
        raise RuntimeError(f"the exported graph's output has {len(dims)} axes, expected [batch, dim]")
    dims[0].dim_param = "batch"
    dims[1].dim_value = dim                      # setting the value clears the symbolic name
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


# ------------------------------------------------------------------------------------------------ transforms
def optimize_onnx(src: str | os.PathLike, dst: str | os.PathLike, method: str = "bert") -> Path:
    """Save a graph-optimised copy of an export.

    Args:
        src: an export folder (its ``model.onnx``) or an ``.onnx`` file inside one.
        dst: a folder (gets ``model.onnx`` + tokenizer + json) or an ``.onnx`` file path (the json and tokenizer
            are copied next to it when that is another folder).
        method: ``"bert"``: ``onnxruntime.transformers.optimizer`` with ``model_type="bert"`` (fuses each
            layer's attention into one ``Attention`` node, GELU and layer norms; a portable graph), or
            ``"ort"``: ONNX Runtime's own ``ORT_ENABLE_EXTENDED`` optimisations written with
            ``optimized_model_filepath`` (no attention fusion on this graph). On MiniLM, 1 CPU thread,
            256 tokens, "bert" was 3-6% faster than both "ort" and the unoptimised graph (which ONNX Runtime
            optimises in memory at every load anyway): close to the noise of a shared machine.

    Returns the path of the written ``.onnx`` file.
    """
    import onnxruntime as ort

    if method not in ("bert", "ort"):
        raise ValueError(f"unknown method {method!r}; choose 'bert' or 'ort'")
    src_folder, src_file = _resolve_source(src)
    config = _read_config(src_folder)
    entry = _file_entry(config, src_file)
    if entry.get("quantization"):
        raise ValueError(f"{src_file} is already int8-quantised; optimise the float graph, then quantise")
    dst_folder, dst_file = _resolve_destination(dst, src_folder, src_file)
    if method == "bert":
        from onnxruntime.transformers import optimizer

        with warnings.catch_warnings(), _quiet_ort_logging():
            warnings.simplefilter("ignore")
            optimized = optimizer.optimize_model(str(src_file), model_type="bert", num_heads=config.get("num_heads", 0),
                                                 hidden_size=config.get("hidden_size", 0), opt_level=0, use_gpu=False)
        optimized.save_model_to_file(str(dst_file))
        fused = {k: int(v) for k, v in optimized.get_fused_operator_statistics().items() if v}
    else:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(dst_file)
        options.log_severity_level = 3
        ort.InferenceSession(str(src_file), options, providers=["CPUExecutionProvider"])
        fused = {}
    entry.update(optimized={"method": method, "fused": fused})
    _copy_companions(src_folder, dst_folder, dst_file, entry)
    return dst_file


@contextlib.contextmanager
def _quiet_ort_logging():
    """Silence the INFO/WARNING lines onnxruntime.transformers and .quantization print through ``logging``."""
    import logging

    loggers = [logging.getLogger(n) for n in ("", "onnxruntime", "onnx_model", "fusion_base", "onnx_model_bert")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def quantize_int8(src: str | os.PathLike, dst: str | os.PathLike, per_channel: bool = True) -> Path:
    """Dynamic int8 quantisation of the weights (``onnxruntime.quantization.quantize_dynamic``).

    Weights of MatMul / Gather (the embedding table) / Attention nodes are stored as int8 with a scale per
    output channel (``per_channel=True``) or one scale per tensor; activations are quantised at run time, so no
    calibration data is needed. The file is ~4x smaller. Per-tensor scales are measurably lossy on MiniLM (one
    outlying weight stretches the whole tensor's scale); see :func:`onnx_comparison`.

    Args:
        src: an export folder or an ``.onnx`` file inside one (float32, optimised or not).
        dst: a folder (self-contained: ``model.onnx``, tokenizer, json) or an ``.onnx`` file path.
        per_channel: one scale per output channel (default) instead of one per weight tensor.

    Returns the path of the written ``.onnx`` file; the json records the quantisation.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src_folder, src_file = _resolve_source(src)
    entry = _file_entry(_read_config(src_folder), src_file)
    if entry.get("quantization"):
        raise ValueError(f"{src_file} is already int8-quantised")
    dst_folder, dst_file = _resolve_destination(dst, src_folder, src_file)
    with warnings.catch_warnings(), _quiet_ort_logging():
        warnings.simplefilter("ignore")
        # DefaultTensorType: fused nodes (Attention...) of an optimised graph have no inferred output type
        quantize_dynamic(str(src_file), str(dst_file), weight_type=QuantType.QInt8, per_channel=bool(per_channel),
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    entry.update(quantization={"method": "dynamic", "weight_type": "int8", "per_channel": bool(per_channel)})
    _copy_companions(src_folder, dst_folder, dst_file, entry)
    return dst_file


# ------------------------------------------------------------------------------------------------ encoder
class OnnxEncoder:
    """Runs an export of :func:`export_onnx` with ONNX Runtime: text -> embedding, no PyTorch needed.

    Args:
        folder: an export folder, or an ``.onnx`` file inside one (e.g. the int8 copy).
        threads: ONNX Runtime intra-op threads (None: its default, one per core).
        providers: ONNX Runtime execution providers.
        file: the graph inside ``folder`` (default ``model.onnx``).

    Attributes: ``dim``, ``max_length``, ``pooling``, ``normalize`` (as exported), ``quantization`` and
    ``optimized`` (None, or what :func:`quantize_int8` / :func:`optimize_onnx` did), ``path`` (the graph),
    ``input_names``.
    """

    def __init__(self, folder: str | os.PathLike, threads: int | None = None,
                 providers: Sequence[str] = ("CPUExecutionProvider",), file: str | None = None):
        from transformers import AutoTokenizer

        from .models import _quiet_loading

        path = Path(folder)
        if not path.exists():
            raise FileNotFoundError(f"no ONNX export at {path}: expected a folder written by export_onnx "
                                    f"(holding {ONNX_FILE}, {ONNX_CONFIG} and the tokenizer) or an .onnx file in one")
        if file is not None:
            if not path.is_dir():
                raise ValueError("give file= only together with a folder")
            path = path / file
        self.folder, self.path = _resolve_source(path)
        self.config = _read_config(self.folder)
        entry = _file_entry(self.config, self.path)
        self.pooling, self.normalize = self.config["pooling"], bool(self.config["normalize"])
        self.max_length, self.dim = int(self.config["max_length"]), int(self.config["dim"])
        self.quantization, self.optimized = entry.get("quantization"), entry.get("optimized")
        with _quiet_loading():
            self.tokenizer = AutoTokenizer.from_pretrained(str(self.folder))
        self.session = _session(self.path, threads, providers)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.threads = threads
        self._fingerprint: str | None = None

    def fingerprint(self) -> str:
        """Hash of the ONNX file's bytes (the graph and its weights): the embedding-cache key."""
        if self._fingerprint is None:
            h = hashlib.blake2b(digest_size=16)
            with open(self.path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            self._fingerprint = "onnx-" + h.hexdigest()
        return self._fingerprint

    def tokenize(self, texts: list[str], max_length: int | None = None) -> dict[str, np.ndarray]:
        """Tokenise with dynamic padding and truncation: int64 arrays [B, T] for the graph's inputs."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError("texts must be a list of strings")
        batch = self.tokenizer(list(texts), padding=True, truncation=True,
                               max_length=max_length or self.max_length, return_tensors="np")
        return {k: np.asarray(v, dtype=np.int64) for k, v in batch.items()}

    def _run(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        shape = batch["input_ids"].shape
        feed = {n: batch[n].astype(np.int64) if n in batch else np.zeros(shape, dtype=np.int64)
                for n in self.input_names}
        return self.session.run([_OUTPUT], feed)[0].astype(np.float32, copy=False)

    def encode(self, texts: list[str], batch_size: int = 32, max_length: int | None = None, progress: bool = False,
               cache: bool = False, desc: str = "encoding", **ignored) -> np.ndarray:
        """Embed ``texts`` like :func:`embedlessons.encoding.encode`: distinct texts once, longest first, in
        batches padded to their longest text.

        Args:
            texts: N strings. batch_size: texts per run. max_length: token limit (default: the export's).
            progress: show a progress bar. cache: use the on-disk embedding cache (keyed by :meth:`fingerprint`).
            Other keyword arguments (e.g. a PyTorch ``device``) are accepted and ignored.

        Returns:
            float32 array [N, dim], in the order of ``texts``.
        """
        from .encoding import encode_texts

        max_length = max_length or self.max_length
        return encode_texts(texts, self.dim, lambda batch: self._run(self.tokenize(batch, max_length)), batch_size,
                            f"{self.fingerprint()}-{max_length}" if cache else None, progress, desc)

    def __repr__(self) -> str:
        kind = "int8" if self.quantization else "fp32" + (" optimised" if self.optimized else "")
        return (f"OnnxEncoder({str(self.path)!r}, {kind}, dim={self.dim}, pooling={self.pooling!r}, "
                f"normalize={self.normalize}, max_length={self.max_length})")


def parity(model, encoder: OnnxEncoder, texts: list[str], max_length: int | None = None,
           batch_size: int = 32) -> dict:
    """How close the ONNX encoder is to the PyTorch model on the same texts.

    Args:
        model: the :class:`~embedlessons.models.BiEncoder` (encoded with ``cache=False``).
        encoder: an :class:`OnnxEncoder` of its export. texts: N >= 1 strings. max_length, batch_size: as in encode.

    Returns:
        ``{"min_cosine", "mean_cosine"`` (row-wise cosine of the two embeddings), ``"max_abs_diff"`` (largest
        element-wise difference), ``"n"}``.
    """
    reference = model.encode(texts, batch_size=batch_size, max_length=max_length, cache=False, progress=False)
    return _parity_stats(reference, encoder.encode(texts, batch_size=batch_size, max_length=max_length))


# ------------------------------------------------------------------------------------------------ experiment
def _size_mb(path: Path) -> float:
    return path.stat().st_size / 1e6


def onnx_comparison(model: str = "all-MiniLM-L6-v2", n_docs: int = 300, batch_size: int = 32, max_length: int = 256,
                    threads: int = 1, repeats: int = 3, n_sts: int | None = None, n_queries: int | None = None,
                    query_max_length: int = 64, sts_max_length: int = 64, k: int = 10, progress: bool = False) -> dict:
    """Speed, size and quality of a model in PyTorch, sentence-transformers and four ONNX variants.

    Variants: ``st_fp32`` (``SentenceTransformer(path).encode``), ``torch_fp32`` (our BiEncoder), ``onnx_fp32``
    (:func:`export_onnx`), ``onnx_optimized`` (:func:`optimize_onnx`), ``onnx_int8_per_channel`` and
    ``onnx_int8_per_tensor`` (:func:`quantize_int8` of the fp32 graph), built in a temporary folder.

    Args:
        model: a name or folder for :func:`~embedlessons.models.load_model` (and for ``SentenceTransformer``);
            ``"small_bert"``: a random :func:`~embedlessons.models.small_bert` (the tiny setting).
        n_docs: the first n SciFact test-corpus abstracts (title + text) timed; with the relevant documents of
            every query they also form the corpus that NDCG is computed on.
        batch_size, max_length, threads: the same for every variant (``torch.set_num_threads`` and ONNX Runtime
            intra-op threads); ``max_length`` is the document token limit.
        repeats: timed passes over the documents (best kept) after a one-batch warm-up; variants alternate
            within each pass so that a noisy machine affects all of them alike.
        n_sts: STS-B test pairs used (None: all). n_queries: the first n SciFact test queries (None: all 300).
            query_max_length, sts_max_length: token limits of queries and
            STS sentences. k: NDCG cutoff.

    Returns:
        ``{"settings", "per_query": {variant: {query id: NDCG@k}}, "ndcg": {variant: mean},
        "throughput": {variant: texts/s}, "speedup_vs_st": {variant: ratio}, "sts_spearman": {variant: rho},
        "parity": {variant: parity stats vs torch_fp32 on the timed documents}, "sizes_mb": {variant: MB}}``.
    """
    from .models import model_folder

    with model_folder(model) as source:
        result = _compare(source, n_docs, batch_size, max_length, threads, repeats, n_sts, n_queries,
                          query_max_length, sts_max_length, k, progress)
    result["settings"]["model"] = str(model)
    return result


def _compare(model: str, n_docs: int, batch_size: int, max_length: int, threads: int, repeats: int,
             n_sts: int | None, n_queries: int | None, query_max_length: int, sts_max_length: int, k: int,
             progress: bool) -> dict:
    """:func:`onnx_comparison` on a model that loads by name or folder."""
    import torch

    from .data import RetrievalDataset, load_retrieval, load_sts
    from .evaluation import ndcg_at_k, spearman
    from .models import _MINILM_ALIASES, load_model, minilm_path
    from .retrieval import dense_run

    for name, value in (("n_docs", n_docs), ("batch_size", batch_size), ("max_length", max_length),
                        ("threads", threads), ("repeats", repeats)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    ds = load_retrieval("scifact", "test")
    timed_ids = ds.doc_ids[:n_docs]
    qids = list(ds.queries)[:n_queries] if n_queries is not None else list(ds.queries)
    qrels = {q: ds.qrels[q] for q in qids}
    relevant = {d for docs in qrels.values() for d in docs if d in ds.corpus}
    timed_set = set(timed_ids)
    extra_ids = [d for d in ds.doc_ids if d in relevant and d not in timed_set]
    quality = RetrievalDataset(name=ds.name, split=ds.split, queries={q: ds.queries[q] for q in qids}, qrels=qrels,
                               corpus={d: ds.corpus[d] for d in [*timed_ids, *extra_ids]})
    doc_texts = quality.doc_texts()
    timed, extra = doc_texts[:len(timed_ids)], doc_texts[len(timed_ids):]
    sts = load_sts("stsb", "test")
    n = len(sts.scores) if n_sts is None else min(int(n_sts), len(sts.scores))
    s1, s2, gold = list(sts.sentences1[:n]), list(sts.sentences2[:n]), np.asarray(sts.scores[:n], dtype=np.float64)
    queries = list(quality.queries.values())

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()              # no load report about BERT's unused pooler
        try:
            bi = load_model(model)
            source = str(minilm_path()) if str(model) in _MINILM_ALIASES else str(model)
            st = SentenceTransformer(source, device="cpu")
        finally:
            hf_logging.set_verbosity(verbosity)
        st.max_seq_length = max_length
        with tempfile.TemporaryDirectory(prefix="onnx_comparison_") as tmp:
            tmp = Path(tmp)
            t0 = time.perf_counter()
            export_onnx(bi, tmp / "fp32")
            files = {"onnx_fp32": tmp / "fp32" / ONNX_FILE,
                     "onnx_optimized": optimize_onnx(tmp / "fp32", tmp / "optimized"),
                     "onnx_int8_per_channel": quantize_int8(tmp / "fp32", tmp / "int8_pc", per_channel=True),
                     "onnx_int8_per_tensor": quantize_int8(tmp / "fp32", tmp / "int8_pt", per_channel=False)}
            build_seconds = time.perf_counter() - t0
            encoders = {v: OnnxEncoder(p, threads=threads) for v, p in files.items()}

            def st_encode(texts, length):
                st.max_seq_length = length
                return st.encode(texts, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)

            encode = {"st_fp32": st_encode,
                      "torch_fp32": lambda texts, length: bi.encode(texts, batch_size=batch_size, max_length=length,
                                                                    cache=False, progress=False)}
            for v, enc in encoders.items():
                encode[v] = lambda texts, length, enc=enc: enc.encode(texts, batch_size=batch_size, max_length=length)

            for fn in encode.values():                                   # warm-up: one batch each
                fn(timed[:batch_size], max_length)
            best = {v: math.inf for v in encode}
            timed_vectors: dict[str, np.ndarray] = {}
            for r in range(repeats):
                for v, fn in encode.items():
                    t = time.perf_counter()
                    timed_vectors[v] = fn(timed, max_length)
                    best[v] = min(best[v], time.perf_counter() - t)
                if progress:
                    print(f"pass {r + 1}/{repeats}: " + ", ".join(f"{v} {len(timed) / best[v]:.1f}/s" for v in best))

            per_query, ndcg, sts_rho, parity_stats = {}, {}, {}, {}
            for v, fn in encode.items():
                docs = np.vstack([timed_vectors[v], fn(extra, max_length)]) if extra else timed_vectors[v]
                q = fn(queries, query_max_length)
                norm = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)
                run = dense_run(norm(q), norm(docs), quality, top_k=max(100, k))
                per_query[v] = ndcg_at_k(quality.qrels, run, k=k, per_query=True)
                ndcg[v] = float(np.mean(list(per_query[v].values())))
                a, b = norm(fn(s1, sts_max_length)), norm(fn(s2, sts_max_length))
                sts_rho[v] = spearman((a * b).sum(axis=1), gold) if n >= 2 else float("nan")
                parity_stats[v] = _parity_stats(timed_vectors["torch_fp32"], timed_vectors[v])
                if progress:
                    print(f"{v}: NDCG@{k} {ndcg[v]:.4f}, STS-B Spearman {sts_rho[v]:.4f}")
            sizes = {v: round(_size_mb(p), 2) for v, p in files.items()}
    finally:
        torch.set_num_threads(previous_threads)
    torch_mb = sum(p.numel() * p.element_size() for p in bi.transformer.parameters()) / 1e6
    sizes = {"st_fp32": round(torch_mb, 2), "torch_fp32": round(torch_mb, 2), **sizes}
    throughput = {v: len(timed) / best[v] for v in best}
    return {
        "settings": {"model": str(model), "n_docs": len(timed), "batch_size": batch_size, "max_length": max_length,
                     "threads": threads, "repeats": repeats, "n_sts": n, "query_max_length": query_max_length,
                     "sts_max_length": sts_max_length, "k": k, "n_queries": len(queries),
                     "quality_docs": len(doc_texts), "build_seconds": round(build_seconds, 1),
                     "dataset": "scifact test (first n_docs abstracts + every relevant one); stsb test"},
        "per_query": per_query,
        "ndcg": ndcg,
        "throughput": throughput,
        "speedup_vs_st": {v: throughput[v] / throughput["st_fp32"] for v in throughput},
        "sts_spearman": sts_rho,
        "parity": parity_stats,
        "sizes_mb": sizes,
    }
