"""Inference conditioning in Open-Sora 1.1's ``mask_strategy`` syntax, and long-video loops.

A strategy is ``;``-separated groups, each ``loop_id,ref_id,ref_start,target_start,length,edit_ratio``
(missing trailing fields take the defaults ``0,0,0,0,1,0``): in loop ``loop_id``, copy
``length`` latent frames of reference ``ref_id`` starting at ``ref_start`` into the generated
clip at ``target_start`` (negative starts count from the end), and keep them (``edit_ratio``
0) or re-generate them during the last ``edit_ratio`` fraction of the denoising steps.

:func:`apply_mask_strategy` returns ``(x_cond, x_mask)`` for the samplers: the latents with
the reference frames in place and a float [B, T] mask (1 = generate, 0 = keep, r = edit).
References are latents [C, T_ref, H, W] (the VAE is per frame, so latent frames are frames).

Looping (long videos): each loop generates T frames; loop i > 0 is conditioned on the last
k frames of loop i - 1 (:func:`append_loop_reference`), and :func:`stitch_loops` drops
those k repeated frames when joining the clips.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import astuple, dataclass

import torch
from torch import Tensor

from soraflow.config_base import ConfigError

FIELDS: tuple[str, ...] = ("loop_id", "ref_id", "ref_start", "target_start", "length", "edit_ratio")
DEFAULTS: tuple[float, ...] = (0, 0, 0, 0, 1, 0.0)

#: The original's recipes (frames are latent frames = video frames; the VAE is per frame).
RECIPES: dict[str, str] = {
    # image-to-video: reference 0 (an image) is the first frame
    "image_to_video": "0",
    # the original's documented "video extending" string: the reference's first 8 frames
    # become the clip's LAST 8, so the model generates what leads into the reference
    "extend": "0,0,0,-8,8",
    # forward continuation (the original's sample-ref config): the reference's last 8 frames
    # become the clip's first 8
    "extend_forward": "0,0,-8,0,8",
    # connect two images: reference 0 is the first frame, reference 1 the last
    "first_last": "0;0,1,0,-1,1",
    # edit: re-generate the first 32 frames of the reference in the last 40% of the steps
    "edit": "0,0,0,0,32,0.4",
}


@dataclass(frozen=True)
class MaskGroup:
    """One group of a mask strategy (see the module docstring)."""

    loop_id: int = 0
    ref_id: int = 0
    ref_start: int = 0
    target_start: int = 0
    length: int = 1
    edit_ratio: float = 0.0

    def __str__(self) -> str:
        return ",".join(_fmt(v) for v in astuple(self))


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def _error(strategy: str, index: int, group: str, message: str) -> ConfigError:
    return ConfigError(f"mask_strategy {strategy!r}: group {index + 1} ({group.strip()!r}): {message}")


def parse_mask_strategy(strategy: str | None) -> list[MaskGroup]:
    """Groups of a strategy string; ``""``/None -> []. Errors name the group and the field."""
    if strategy is None or not strategy.strip():
        return []
    groups = []
    for index, text in enumerate(strategy.split(";")):
        parts = [p.strip() for p in text.split(",")]
        if len(parts) > len(FIELDS):
            raise _error(strategy, index, text, f"{len(parts)} fields, at most {len(FIELDS)} ({', '.join(FIELDS)})")
        values: list[float] = list(DEFAULTS)
        for pos, raw in enumerate(parts):
            name = FIELDS[pos]
            if raw == "":
                raise _error(strategy, index, text, f"field {name} is empty")
            if name == "edit_ratio":
                try:
                    val = float(raw)
                except ValueError:
                    raise _error(strategy, index, text, f"field {name} must be a number in [0, 1], got {raw!r}") from None
                if not 0.0 <= val <= 1.0:
                    raise _error(strategy, index, text, f"field {name} must be in [0, 1], got {raw!r}")
            else:
                try:
                    val = int(raw)
                except ValueError:
                    raise _error(strategy, index, text, f"field {name} must be an integer, got {raw!r}") from None
                if name in ("loop_id", "ref_id") and val < 0:
                    raise _error(strategy, index, text, f"field {name} must be >= 0, got {raw!r}")
                if name == "length" and val < 1:
                    raise _error(strategy, index, text, f"field {name} must be >= 1, got {raw!r}")
            values[pos] = val
        groups.append(MaskGroup(*values))  # type: ignore[arg-type]
    return groups


def format_mask_strategy(groups: Sequence[MaskGroup]) -> str:
    return ";".join(str(g) for g in groups)


def _resolve(start: int, size: int) -> int:
    return size + start if start < 0 else start


def apply_mask_strategy(
    z: Tensor,
    refs: Sequence[Sequence[Tensor] | None],
    strategies: Sequence[str | None],
    loop_i: int = 0,
) -> tuple[Tensor, Tensor]:
    """Place reference frames into latents and build the frame mask for one loop.

    ``z`` [B, C, T, H, W] (typically the initial noise; only its shape/dtype matter for the
    generated frames); ``refs[b]`` the reference latents of sample b, each [C, T_ref, H, W];
    ``strategies[b]`` its strategy string. Groups of other loops are ignored. Lengths are
    clipped to what fits in the clip and in the reference (as the original). Returns
    ``(x_cond, x_mask)``: a copy of ``z`` with the reference frames written in, and float
    [B, T] (1 = generate, 0 = keep, r in (0, 1) = edit), to pass as the samplers' ``x_cond``
    and ``x_mask``. Out-of-range starts or a missing reference raise :class:`ConfigError`.
    """
    if len(strategies) != z.shape[0]:
        raise ValueError(f"{len(strategies)} mask strategies for a batch of {z.shape[0]}")
    x_cond = z.clone()
    num_frames = z.shape[2]
    x_mask = torch.ones(z.shape[0], num_frames, dtype=torch.float32, device=z.device)
    for b, strategy in enumerate(strategies):
        sample_refs = list(refs[b]) if b < len(refs) and refs[b] is not None else []
        for index, g in enumerate(parse_mask_strategy(strategy)):
            if g.loop_id != loop_i:
                continue
            group = str(g)
            if g.ref_id >= len(sample_refs):
                raise _error(strategy or "", index, group, f"field ref_id={g.ref_id} but sample {b} has {len(sample_refs)} reference(s)")
            ref = sample_refs[g.ref_id]
            if ref.dim() != 4 or ref.shape[0] != z.shape[1] or ref.shape[2:] != z.shape[3:]:
                raise ValueError(
                    f"reference {g.ref_id} of sample {b} is {tuple(ref.shape)}; want [C, T, H, W] with C, H, W = "
                    f"{(z.shape[1], *z.shape[3:])}"
                )
            ref_start = _resolve(g.ref_start, ref.shape[1])
            target_start = _resolve(g.target_start, num_frames)
            if not 0 <= ref_start < ref.shape[1]:
                raise _error(strategy or "", index, group, f"field ref_start={g.ref_start} is outside the reference's {ref.shape[1]} frames")
            if not 0 <= target_start < num_frames:
                raise _error(strategy or "", index, group, f"field target_start={g.target_start} is outside the clip's {num_frames} frames")
            length = min(g.length, num_frames - target_start, ref.shape[1] - ref_start)
            x_cond[b, :, target_start : target_start + length] = ref[:, ref_start : ref_start + length].to(x_cond)
            x_mask[b, target_start : target_start + length] = g.edit_ratio
    return x_cond, x_mask


# -- long videos by looping -------------------------------------------------------------------
def loop_group(loop_i: int, ref_id: int, condition_frames: int, edit_ratio: float = 0.0) -> MaskGroup:
    """The group conditioning loop ``loop_i`` on the last ``condition_frames`` of reference ``ref_id``."""
    if condition_frames < 1:
        raise ValueError(f"condition_frames must be >= 1, got {condition_frames}")
    return MaskGroup(loop_i, ref_id, -condition_frames, 0, condition_frames, edit_ratio)


def append_loop_reference(
    refs: list[Tensor] | None,
    strategy: str | None,
    generated: Tensor,
    loop_i: int,
    condition_frames: int,
    edit_ratio: float = 0.0,
) -> tuple[list[Tensor], str]:
    """Add the clip generated by loop ``loop_i - 1`` as a reference for loop ``loop_i``.

    ``generated`` [C, T, H, W] latents. Returns the new reference list and the strategy with
    a group that puts its last ``condition_frames`` frames at the start of loop ``loop_i``.
    """
    refs = list(refs or [])
    refs.append(generated)
    group = loop_group(loop_i, len(refs) - 1, condition_frames, edit_ratio)
    strategy = f"{strategy};{group}" if strategy else str(group)
    return refs, strategy


def stitch_loops(clips: Sequence[Tensor], condition_frames: int, frame_dim: int = 1) -> Tensor:
    """Join loop outputs, dropping each later loop's first ``condition_frames`` (repeated) frames."""
    if not clips:
        raise ValueError("no clips to stitch")
    parts = [clips[0]] + [c.narrow(frame_dim, condition_frames, c.shape[frame_dim] - condition_frames) for c in clips[1:]]
    return torch.cat(parts, dim=frame_dim)


def looped_length(num_loops: int, frames_per_loop: int, condition_frames: int) -> int:
    """Frames of a stitched long video: T + (loops - 1) * (T - k)."""
    if not 0 <= condition_frames < frames_per_loop:
        raise ValueError("condition_frames must be in [0, frames_per_loop)")
    return frames_per_loop + (num_loops - 1) * (frames_per_loop - condition_frames)
