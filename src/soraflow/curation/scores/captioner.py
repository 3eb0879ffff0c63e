"""Captions from a transformers image-to-text model given by folder (or cached ``hf-hub:`` id).

Transformers 5 has no ``image-to-text`` pipeline any more, so the model is loaded directly:
``VisionEncoderDecoderModel`` when the folder's config is a vision-encoder-decoder (e.g. a ViT
+ GPT-2 captioner), otherwise ``AutoModelForImageTextToText`` (BLIP, LLaVA-like models). The
processor is ``AutoProcessor`` when the folder has one, else ``AutoImageProcessor`` +
``AutoTokenizer``. Decoding is greedy, so a caption is deterministic. One frame (the middle
of the frames given) is captioned, as the original did with LLaVA.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from soraflow.config_base import ConfigError
from soraflow.curation.scores.clip_scores import HF_PREFIX, resolve_hub_id

log = logging.getLogger(__name__)


class Captioner:
    def __init__(
        self,
        model: Any,
        image_processor: Any,
        tokenizer: Any,
        processor: Any,
        device: str,
        max_new_tokens: int,
        prompt: str | None,
    ) -> None:
        self.model = model
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.processor = processor
        self.device = device
        self.max_new_tokens = max_new_tokens
        self.prompt = prompt

    @classmethod
    def load(cls, source: str, device: str, max_new_tokens: int, prompt: str | None) -> Captioner:
        from transformers import (
            AutoConfig,
            AutoImageProcessor,
            AutoModelForImageTextToText,
            AutoProcessor,
            AutoTokenizer,
            VisionEncoderDecoderModel,
        )

        if source.startswith(HF_PREFIX):
            folder = resolve_hub_id(source, "captioner")
        else:
            folder = Path(source).expanduser()
            if not folder.is_dir():
                raise ConfigError(f"curate.scores.captioner: folder not found: {folder}")
        try:
            config = AutoConfig.from_pretrained(folder, local_files_only=True)
            if config.model_type == "vision-encoder-decoder":
                model = VisionEncoderDecoderModel.from_pretrained(folder, local_files_only=True)
            else:
                model = AutoModelForImageTextToText.from_pretrained(folder, local_files_only=True)
        except Exception as err:  # noqa: BLE001 - report any loading failure with the key name
            raise ConfigError(f"curate.scores.captioner: cannot load a model from {folder}: {err}") from err
        processor = image_processor = tokenizer = None
        try:
            processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
            if not hasattr(processor, "image_processor"):
                # AutoProcessor fell back to a bare image processor or tokenizer
                processor = None
        except Exception:  # noqa: BLE001 - no processor config: use the separate parts
            processor = None
        if processor is None:
            try:
                image_processor = AutoImageProcessor.from_pretrained(folder, local_files_only=True)
                tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            except Exception as err:  # noqa: BLE001
                raise ConfigError(
                    f"curate.scores.captioner: {folder} needs an image processor and a tokenizer: {err}"
                ) from err
        else:
            tokenizer = getattr(processor, "tokenizer", None)
        model = model.eval().to(device)
        return cls(model, image_processor, tokenizer, processor, device, max_new_tokens, prompt)

    @torch.inference_mode()
    def caption(self, frame: np.ndarray) -> str:
        from PIL import Image

        image = Image.fromarray(frame)
        if self.processor is not None:
            kwargs: dict[str, Any] = {"images": image, "return_tensors": "pt"}
            if self.prompt:
                kwargs["text"] = self.prompt
            inputs = self.processor(**kwargs)
        else:
            inputs = self.image_processor(images=image, return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in inputs.items() if isinstance(v, torch.Tensor)}
        gen_kwargs: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "do_sample": False, "num_beams": 1}
        tok = self.tokenizer
        if tok is not None and getattr(self.model.generation_config, "pad_token_id", None) is None:
            pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
            if pad is not None:
                gen_kwargs["pad_token_id"] = pad
        out = self.model.generate(**inputs, **gen_kwargs)
        if "input_ids" in inputs and out.shape[1] > inputs["input_ids"].shape[1]:
            out = out[:, inputs["input_ids"].shape[1] :]  # decoder-only models echo the prompt
        decoder = self.processor if self.processor is not None else tok
        text = decoder.batch_decode(out, skip_special_tokens=True)[0]
        return " ".join(text.split())
