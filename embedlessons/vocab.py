"""Vocabularies: does a tokenizer cover a language, and a character vocabulary when it does not.

An English WordPiece vocabulary (MiniLM's, like BERT's uncased one) holds only a few Chinese characters:
every other character becomes ``[UNK]``, and two sentences that share only unknown characters look the
same to the model. :func:`unknown_token_share` measures that; :func:`character_tokenizer` builds a BERT
tokenizer whose vocabulary is the characters of a training corpus (BERT's own Chinese model tokenises
Chinese character by character too, Devlin et al. 2019), for a model trained from scratch.
"""
from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

__all__ = ["unknown_token_share", "character_tokenizer", "SPECIAL_TOKENS"]

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def _texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise TypeError("texts must be a list of strings")
    if not texts:
        raise ValueError("texts is empty")
    return list(texts)


def unknown_token_share(tokenizer, texts: Sequence[str]) -> float:
    """Share of the tokens of ``texts`` (special tokens excluded) that the tokenizer maps to its unknown token."""
    texts = _texts(texts)
    unk = tokenizer.unk_token_id
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    total = sum(len(x) for x in ids)
    return sum(i == unk for x in ids for i in x) / total if total else 0.0


def character_tokenizer(texts: Sequence[str], min_count: int = 2, folder: str | Path | None = None):
    """A BERT tokenizer whose vocabulary is the characters seen at least ``min_count`` times in ``texts``.

    BERT's basic tokenizer puts spaces around every CJK character, so each Chinese character is one token;
    other words (Latin letters, digits) are split into the characters of the vocabulary by WordPiece.

    Args:
        texts: the training corpus (never the test set: its characters would leak into the vocabulary).
        min_count: rarer characters become ``[UNK]``.
        folder: where ``vocab.txt`` and the tokenizer files go (default: a temporary folder).

    Returns:
        a ``BertTokenizerFast`` (lower-casing, vocabulary = special tokens + characters, most frequent first).
    """
    from transformers import BertTokenizerFast

    texts = _texts(texts)
    if min_count < 1:
        raise ValueError(f"min_count must be >= 1, got {min_count}")
    counts = Counter(ch for t in texts for ch in t.lower() if not ch.isspace())
    chars = [c for c, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if n >= min_count]
    vocab = list(SPECIAL_TOKENS) + chars + [f"##{c}" for c in chars if c.isascii() and c.isalnum()]
    folder = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix="char_vocab_"))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab={token: i for i, token in enumerate(vocab)}, do_lower_case=True,
                                  tokenize_chinese_chars=True)
    if len(tokenizer) != len(vocab):
        raise RuntimeError(f"the tokenizer holds {len(tokenizer)} tokens, expected the {len(vocab)} written")
    tokenizer.save_pretrained(folder)
    return tokenizer
