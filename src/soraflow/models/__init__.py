"""STDiT2, the spatial-temporal diffusion transformer of Open-Sora 1.1 (with soraflow's fixes).

Public API::

    from soraflow.models import STDiT2, STDiT2Config, ModelConfig, PRESETS
    model = build_model(preset_config("STDiT2-T/2", caption_channels=384, caption_max_length=32))
    out = model(x, timestep, y, mask, x_mask, height=h, width=w)   # see soraflow.models.stdit2
    save_model(model, "models/stdit2"); model = load_model("models/stdit2")
    config, state_dict = convert_opensora_state_dict(torch.load(path, weights_only=True))
"""

from soraflow.models.config import PRESETS, ModelConfig, STDiT2Config, preset_config
from soraflow.models.convert import convert_opensora_checkpoint, convert_opensora_state_dict
from soraflow.models.flops import count_flops, count_parameters
from soraflow.models.io import build_model, load_model, save_model
from soraflow.models.stdit2 import STDiT2, STDiT2Block

__all__ = [
    "PRESETS",
    "ModelConfig",
    "STDiT2",
    "STDiT2Block",
    "STDiT2Config",
    "build_model",
    "convert_opensora_checkpoint",
    "convert_opensora_state_dict",
    "count_flops",
    "count_parameters",
    "load_model",
    "preset_config",
    "save_model",
]
