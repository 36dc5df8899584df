"""Unknown-token share and the character vocabulary (section 5.8's Chinese project)."""
import pytest

from embedlessons.experiments.part5_projects import chinese_start
from embedlessons.models import small_bert
from embedlessons.vocab import character_tokenizer, unknown_token_share

ZH = ["一个女孩在给她的头发做发型。", "一群男人在海滩上踢足球。", "一个女孩在做饭。"]


def test_minilm_vocabulary_misses_chinese_and_characters_cover_it():
    minilm_tokenizer = small_bert(num_layers=1, hidden_size=32, num_heads=2, intermediate_size=64).tokenizer
    assert unknown_token_share(minilm_tokenizer, ZH) > 0.3
    assert unknown_token_share(minilm_tokenizer, ["a girl is doing her hair"]) == 0
    chars = character_tokenizer(ZH, min_count=1)
    assert unknown_token_share(chars, ZH) == 0
    assert chars.tokenize("女孩") == ["女", "孩"]
    assert unknown_token_share(character_tokenizer(ZH, min_count=2), ZH) > 0      # characters seen once drop out
    model = small_bert(num_layers=1, hidden_size=32, num_heads=2, intermediate_size=64, tokenizer=chars)
    assert model.transformer.config.vocab_size == len(chars)
    assert model.encode(ZH, cache=False, progress=False).shape == (3, 32)


def test_bad_input():
    with pytest.raises(TypeError):
        character_tokenizer("一个")
    with pytest.raises(ValueError, match="empty"):
        character_tokenizer([])
    with pytest.raises(ValueError, match="min_count"):
        character_tokenizer(ZH, min_count=0)


def test_chinese_start_tiny():
    out = chinese_start(steps=2, batch_size=8, num_layers=1, hidden_size=32, max_triplets=64, cache=False)
    assert set(out["spearman"]) == {"MiniLM", "untrained", "trained"}
    assert out["unknown_share"]["character vocabulary"] < out["unknown_share"]["MiniLM (English WordPiece)"]
    assert len(out["losses"]) == 2
