"""Captioner: a tiny ViT + GPT-2 VisionEncoderDecoder built here, saved, loaded by path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from soraflow.config_base import ConfigError
from soraflow.curation.scores import ScoresConfig, caption_frames, load_scorers

CORPUS = [
    "a red circle moving left on a gray background",
    "a blue square standing still on a white textured background",
    "a green triangle moving up on a pink gradient background",
    "a yellow circle moving down on a black background",
]


@pytest.fixture(scope="module")
def tiny_captioner(tmp_path_factory) -> str:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import (
        GPT2Config,
        PreTrainedTokenizerFast,
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
        ViTConfig,
        ViTImageProcessor,
    )

    folder = tmp_path_factory.mktemp("captioner")
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(CORPUS, trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]", "[BOS]", "[EOS]"]))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", bos_token="[BOS]", eos_token="[EOS]"
    )
    enc = ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    dec = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=64,
        n_embd=32,
        n_layer=1,
        n_head=2,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    model = VisionEncoderDecoderModel(config=VisionEncoderDecoderConfig.from_encoder_decoder_configs(enc, dec))
    model.config.decoder_start_token_id = tokenizer.bos_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.decoder_start_token_id = tokenizer.bos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    # untrained weights: make sure the saved generation settings yield words, not only specials
    model.generation_config.min_new_tokens = 3
    model.generation_config.bad_words_ids = [[tokenizer.convert_tokens_to_ids(t)] for t in ("[PAD]", "[UNK]", "[BOS]")]
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return str(folder)


def _frames(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (5, 40, 60, 3), dtype=np.uint8)


def test_caption_from_tiny_model_is_a_deterministic_string(tiny_captioner):
    cfg = ScoresConfig(ocr_frames=0, captioner=tiny_captioner, caption_max_new_tokens=8)
    scorers = load_scorers(cfg)
    assert "caption" not in scorers.missing
    frames = _frames(0)
    text = caption_frames(frames, scorers)
    assert isinstance(text, str) and text == text.strip() and len(text.split()) >= 3
    vocab = set(" ".join(CORPUS).split())
    assert all(word in vocab for word in text.split())  # decoded through the saved tokenizer
    assert len(text.split()) <= 8
    assert caption_frames(frames, scorers) == text  # greedy decoding
    reloaded = load_scorers(cfg)
    assert caption_frames(frames, reloaded) == text  # same weights from disk
    # the caption depends on the image (the middle frame is the one captioned)
    others = {caption_frames(_frames(seed), scorers) for seed in range(1, 6)}
    assert len(others | {text}) > 1


def test_no_captioner_returns_none_with_reason():
    scorers = load_scorers(ScoresConfig(ocr_frames=0))
    assert caption_frames(_frames(0), scorers) is None
    assert "captioner" in scorers.missing["caption"]


def test_missing_captioner_folder_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="captioner"):
        load_scorers(ScoresConfig(ocr_frames=0, captioner=str(tmp_path / "nope")))
    with pytest.raises(ConfigError, match="captioner"):
        load_scorers(ScoresConfig(ocr_frames=0, captioner=str(tmp_path)))  # a folder with no model
