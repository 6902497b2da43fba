"""Conversion hooks the token families (vit, eva) share: reading a timm transformer, keys, verification inputs.

A token family's hooks (``conversion/vit.py``...) derive from :class:`TokenHooks` and write what differs (which
classes, config from timm, key renames); see ``conversion/families.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import ClassVar

import torch
from torch import nn

from conversion.common import UnsupportedArchitecture, activation_name, norm_spec, present, square_or_pair
from conversion.families import FamilyHooks


def mlp_spec(mlp: nn.Module) -> dict:
    """mlp_type, intermediate_size (fc1 width; packed GLU: both halves), activation, MLP norm."""
    name = type(mlp).__name__
    if name == "Mlp" and isinstance(mlp.fc1, nn.Linear):
        kind, hidden = "mlp", mlp.fc1.out_features
    elif name == "GluMlp":
        if mlp.gate_last:
            raise UnsupportedArchitecture("GluMlp with gate_last=True is not supported (SwiGLUPacked gates first).")
        kind, hidden = "glu_packed", mlp.fc1.out_features
    elif name == "SwiGLU":
        kind, hidden = "swiglu", mlp.fc1_x.out_features
    else:
        raise UnsupportedArchitecture(f"MLP layer {name} is not supported (Mlp, SwiGLUPacked and SwiGLU are).")
    return dict(mlp_type=kind, intermediate_size=hidden, hidden_act=activation_name(mlp.act))


def check_patch_embed(embed: nn.Module) -> None:
    if type(embed).__name__ != "PatchEmbed":
        raise UnsupportedArchitecture(f"patch embedding {type(embed).__name__} is not supported (PatchEmbed is).")
    if embed.dynamic_img_pad:
        raise UnsupportedArchitecture("dynamic_img_pad=True is not supported: inputs must be multiples of the patch.")
    if embed.proj.kernel_size != embed.proj.stride or embed.proj.padding != (0, 0):
        raise UnsupportedArchitecture("overlapping patch embedding is not supported.")


def encoder_fields(model: nn.Module, block_types: tuple[str, ...]) -> dict:
    """Geometry, MLP and norm fields every family reads the same way off a timm model (its first block
    standing for all); checks the patch embedding and the block type first."""
    embed = model.patch_embed
    check_patch_embed(embed)
    block = model.blocks[0]
    if type(block).__name__ not in block_types:
        supported = ", ".join(block_types)
        raise UnsupportedArchitecture(f"block type {type(block).__name__} is not supported ({supported} are).")
    norm_type, eps = norm_spec(block.norm1)
    return dict(
        image_size=square_or_pair(embed.img_size),
        patch_size=square_or_pair(embed.patch_size),
        num_channels=embed.proj.in_channels,
        hidden_size=model.embed_dim,
        num_hidden_layers=len(model.blocks),
        num_attention_heads=block.attn.num_heads,
        **mlp_spec(block.mlp),
        scale_mlp_norm=present(block.mlp.norm),
        norm_type=norm_type,
        layer_norm_eps=eps,
    )


def check_attn_pool(pool: nn.Module) -> None:
    name = type(pool).__name__
    if name != "AttentionPoolLatent":
        raise UnsupportedArchitecture(f"pooling module {name} (global_pool='prr'?) is not supported.")
    standard = (
        pool.latent_len == 1
        and pool.pos_embed is None
        and pool.pool == "token"
        and not present(pool.q_norm)
        and isinstance(pool.q, nn.Linear)
        and pool.mlp is not None
    )
    if not standard:
        raise UnsupportedArchitecture("only the standard single-latent MAP head (SigLIP) is supported.")


EMBEDDING_KEYS = ("cls_token", "reg_token", "dist_token", "pos_embed", "patch_embed.")


def token_key(key: str, prefix: str, with_head: bool, renames: dict[str, str] | None = None) -> str | None:
    """timm key -> key of the family's ForImageClassification (``with_head``) or base model; None drops it.

    Embedding parameters move under ``embeddings.``, ``renames`` maps key suffixes (e.g. ``gamma_1`` ->
    ``ls1.gamma``), the classifier becomes ``head.layers`` and everything else keeps timm's name.
    """
    head = next((h for h in ("head.", "head_dist.") if key.startswith(h)), None)
    if head is not None:
        return head + "layers." + key[len(head) :] if with_head else None
    for old, new in (renames or {}).items():
        if key.endswith("." + old):
            key = key[: -len(old)] + new
    if key.startswith(EMBEDDING_KEYS):
        key = "embeddings." + key
    return f"{prefix}.{key}" if with_head else key


class TokenHooks(FamilyHooks):
    """A family of timm transformers over one token sequence: ``model.blocks``, a ``patch_embed``, other sizes
    through position-embedding interpolation (timm's ``dynamic_img_size``). A family sets ``renames``
    (key suffix renames, e.g. EVA's bare LayerScale names) if timm's names differ from ours."""

    size_rule = "interpolate_pos_encoding"
    attention = True
    renames: ClassVar[dict[str, str]] = {}

    def convert_key(self, key: str, with_head: bool = True) -> str | None:
        return token_key(key, self.family.model.base_model_prefix, with_head, self.renames)

    def block_groups(self, model: nn.Module) -> list[nn.Sequential | nn.ModuleList]:
        return [model.blocks]

    def reference_kwargs(self, model_name: str) -> dict:
        """dynamic_img_size lets the model serve as the reference at any size."""
        return {"dynamic_img_size": True}

    def input_size(self, model: nn.Module) -> tuple[int, int, int]:
        """The size the model was built for (a checkpoint fine-tuned at another ``img_size`` keeps its own)."""
        embed = model.patch_embed
        return embed.proj.in_channels, *embed.img_size

    def verification_inputs(self, reference: nn.Module) -> dict[str, tuple[torch.Tensor, dict]]:
        """The native size, and another one with whole patches (a native size such as 384 at patch 14 leaves a
        remainder that only it may have), run with ``interpolate_pos_encoding=True``."""
        ph, pw = reference.patch_embed.patch_size
        channels, height, width = self.input_size(reference)
        generator = torch.Generator().manual_seed(0)
        other = (height // ph + 2) * ph, (width // pw - 1) * pw
        return {
            "native": (torch.randn(2, channels, height, width, generator=generator), {}),
            "interpolated": (
                torch.randn(2, channels, *other, generator=generator),
                {"interpolate_pos_encoding": True},
            ),
        }

    @contextmanager
    def reference_at(self, reference: nn.Module, input_name: str) -> Iterator[None]:
        """At the native size timm runs as pretrained, fixed-size: its conv drops a pixel remainder (so400m/14 at
        384) that its dynamic-size mode would refuse."""
        strict = reference.patch_embed.strict_img_size
        reference.patch_embed.strict_img_size = strict or input_name == "native"
        try:
            yield
        finally:
            reference.patch_embed.strict_img_size = strict
