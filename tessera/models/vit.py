"""Vision Transformer (Dosovitskiy et al., 2021), and the body its variants build on.

The image is cut into 16x16 patches, each projected to a token; a learned class token is put
in front, a learned absolute position embedding is added, and a stack of pre-norm
transformer blocks follows. The head reads the normalised class token
(``global_pool="token"``) or the mean of the patch tokens (``"avg"``, normalised after pooling
as in timm).

Parameter names are timm's (``cls_token``, ``pos_embed``, ``patch_embed.proj``,
``blocks.{i}.norm1``, ``attn.qkv``, ``attn.proj``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``,
``norm``, ``fc_norm``, ``head``), so timm's and the official DeiT state dicts load unchanged.

The position embedding is learned for the patch grid of ``img_size``. At another input size
it is resized at run time (antialiased bicubic, as timm's ``dynamic_img_size``); a
checkpoint trained at another size is resized when it is loaded, by ``load_checkpoint`` as
well as ``load_state_dict``.

DeiT, DeepViT, CaiT and CPVT subclass :class:`VisionTransformer`; they change its pieces
through the small hooks ``_make_patch_embed``, ``_make_block``, ``_drop_path_rates``,
``_prefix_tokens`` and ``_forward_blocks``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..layers.block import Block, LayerNorm6, pool_tokens, prepend_tokens
from ..layers.drop import drop_path_rates
from ..layers.helpers import check_input, init_linear_trunc_normal, prod, to_ntuple
from ..layers.patch_embed import PatchEmbed
from ..layers.pos_embed import fit_checkpoint_pos_embed, resize_pos_embed
from ..registry import register_model
from ..weights.load import LoadReport
from .base import TesseraModel, maybe_checkpoint

__all__ = ["VisionTransformer"]


class VisionTransformer(TesseraModel):
    """Vision Transformer (timm's keyword names).

    Args:
        img_size: the training resolution; it fixes the grid of the position embedding.
            Other sizes work (the embedding is resized; sizes that are not a multiple of
            the patch are zero-padded at the end).
        patch_size: patch side.
        in_chans: input channels.
        num_classes: classes of the linear head; 0 for none.
        global_pool: ``"token"`` (the class token) or ``"avg"`` (mean of the patch tokens).
        embed_dim: channels C of every token.
        depth: number of blocks.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width over C.
        qkv_bias: bias on the qkv projection.
        init_values: LayerScale initial value (``None``: no LayerScale).
        class_token: put a learned class token in front of the patch tokens.
        pos_embed: ``"learn"`` (learned absolute embedding) or ``"none"``.
        no_embed_class: the position embedding covers the patch tokens only, not the prefix.
        fc_norm: normalise after pooling instead of before (``None``: only for ``"avg"``).
        drop_rate: dropout before the head.
        pos_drop_rate: dropout after the position embedding.
        proj_drop_rate: dropout after the attention projection and in the MLP.
        attn_drop_rate: dropout on the attention weights.
        drop_path_rate: stochastic depth, rising linearly over the blocks to this value.

    Shape: ``(B, in_chans, H, W) -> (B, num_classes)``; ``forward_features`` gives the
    normalised tokens ``(B, prefix + (H / p) * (W / p), C)``, prefix tokens first.
    """

    def __init__(
        self,
        img_size: int | Sequence[int] = 224,
        patch_size: int | Sequence[int] = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "token",
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        init_values: float | None = None,
        class_token: bool = True,
        pos_embed: str = "learn",
        no_embed_class: bool = False,
        fc_norm: bool | None = None,
        drop_rate: float = 0.0,
        pos_drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if global_pool not in ("token", "avg"):
            raise ValueError(f"unknown global_pool {global_pool!r}; expected 'token' or 'avg'")
        if global_pool == "token" and not class_token:
            raise ValueError("global_pool='token' needs class_token=True")
        if pos_embed not in ("learn", "none"):
            raise ValueError(f"unknown pos_embed {pos_embed!r}; expected 'learn' or 'none'")
        self.img_size = to_ntuple(img_size, 2, "img_size")
        self.patch_size = to_ntuple(patch_size, 2, "patch_size")
        self.patch_grid = tuple(s // p for s, p in zip(self.img_size, self.patch_size))
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.num_features = self.embed_dim = embed_dim
        #: tokens in front of the patch tokens in ``forward_features``' output
        self.num_prefix_tokens = 1 if class_token else 0
        #: of those, the ones the position embedding covers (they come first in it)
        self.pos_embed_prefix_tokens = 0 if no_embed_class else self.num_prefix_tokens

        self.patch_embed = self._make_patch_embed(in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if class_token else None
        self.pos_embed = None
        if pos_embed == "learn":
            tokens = self.pos_embed_prefix_tokens + prod(self.patch_grid)
            self.pos_embed = nn.Parameter(torch.zeros(1, tokens, embed_dim))
        self.pos_drop = nn.Dropout(pos_drop_rate)
        rates = self._drop_path_rates(depth, drop_path_rate)
        self.blocks = nn.ModuleList(
            self._make_block(
                i, depth, dim=embed_dim, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                proj_drop=proj_drop_rate, attn_drop=attn_drop_rate, drop_path=rates[i], init_values=init_values,
            )
            for i in range(depth)
        )
        use_fc_norm = global_pool == "avg" if fc_norm is None else fc_norm
        self.norm = nn.Identity() if use_fc_norm else LayerNorm6(embed_dim)
        self.fc_norm = LayerNorm6(embed_dim) if use_fc_norm else nn.Identity()
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()

        # timm's initialisation: trunc-normal linears and position embedding, a tiny class token
        self.apply(init_linear_trunc_normal)
        if self.pos_embed is not None:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)
        self.default_cfg["input_size"] = (in_chans, *self.img_size)

    # -- the pieces subclasses change ----------------------------------------------------

    def _make_patch_embed(self, in_chans: int, embed_dim: int) -> nn.Module:
        """``(B, in_chans, H, W) -> (B, H / p, W / p, C)``."""
        return PatchEmbed(self.patch_size, in_chans, embed_dim, norm=False)

    def _make_block(self, index: int, depth: int, **kwargs) -> nn.Module:
        """Block ``index`` of ``depth``; ``kwargs`` are the arguments of
        :class:`~tessera.layers.block.Block`."""
        return Block(**kwargs)

    def _drop_path_rates(self, depth: int, rate: float) -> list[float]:
        # on the CPU even when the model is built on the meta device
        return drop_path_rates(rate, depth)

    def _prefix_tokens(self) -> list[torch.Tensor]:
        """The learned tokens put in front of the patch tokens by ``_embed``."""
        return [self.cls_token] if self.cls_token is not None else []

    def _forward_blocks(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """The blocks on ``(B, N, C)`` tokens of a patch ``grid``."""
        for blk in self.blocks:
            x = maybe_checkpoint(blk, x, enabled=self.grad_checkpointing)
        return x

    # -- embedding and position embedding ---------------------------------------------------

    def _check(self, x: torch.Tensor) -> None:
        check_input(x, rank=4, channels=self.in_chans, layout=f"(B, {self.in_chans}, H, W)", min_size=self.patch_size)

    def pos_embed_for(self, grid: tuple[int, int]) -> torch.Tensor:
        """The position embedding for a patch ``grid``: ``(1, prefix + prod(grid), C)``."""
        if grid == self.patch_grid:
            return self.pos_embed
        return resize_pos_embed(self.pos_embed, self.patch_grid, grid, self.pos_embed_prefix_tokens, antialias=True)

    def _embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Image to tokens: ``(B, in_chans, H, W) -> ((B, prefix + N, C), grid)``."""
        self._check(x)
        x = self.patch_embed(x)
        grid = (x.shape[1], x.shape[2])
        x = x.flatten(1, 2)
        if self.pos_embed is None:
            x = prepend_tokens(x, *self._prefix_tokens())
        elif self.pos_embed_prefix_tokens == 0:
            x = prepend_tokens(x + self.pos_embed_for(grid), *self._prefix_tokens())
        else:
            x = prepend_tokens(x, *self._prefix_tokens()) + self.pos_embed_for(grid)
        return self.pos_drop(x), grid

    def fit_checkpoint_pos_embed(self, state_dict: dict[str, torch.Tensor], prefix: str = "") -> str | None:
        """Resize, in ``state_dict``, a position embedding trained on another grid to this
        model's; returns a note saying so, or ``None`` when nothing was resized."""
        key = prefix + "pos_embed"
        value = state_dict.get(key)
        if self.pos_embed is None or value is None or value.shape == self.pos_embed.shape:
            return None
        if value.dim() != 3 or value.shape[-1] != self.pos_embed.shape[-1]:
            return None  # not ours to fix: reported as a shape mismatch
        fitted = fit_checkpoint_pos_embed(value, self.patch_grid, self.pos_embed_prefix_tokens, antialias=True)
        if fitted is None:
            return None
        state_dict[key], old = fitted
        return f"{key} resized from a {old[0]}x{old[1]} to a {self.patch_grid[0]}x{self.patch_grid[1]} grid"

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: D401
        self.fit_checkpoint_pos_embed(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def adapt_checkpoint(self, state_dict: dict[str, torch.Tensor], report: LoadReport) -> dict[str, torch.Tensor]:
        """A position embedding trained on another grid is resized as timm does (antialiased
        bicubic on the square grid of the checkpoint)."""
        note = self.fit_checkpoint_pos_embed(state_dict)
        if note:
            report.notes.append(note)
        return state_dict

    # -- the API -----------------------------------------------------------------------------

    def no_weight_decay(self) -> set[str]:
        return {n for n in ("pos_embed", "cls_token", "dist_token") if getattr(self, n, None) is not None}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, H, W) -> (B, prefix + N, C)``: the normalised tokens."""
        x, grid = self._embed(x)
        x = self._forward_blocks(x, grid)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool the tokens, then the linear head: ``(B, N, C) -> (B, num_classes)`` (``(B, C)``
        with ``pre_logits``)."""
        x = pool_tokens(x, self.global_pool, self.num_prefix_tokens)
        x = self.head_drop(self.fc_norm(x))
        return x if pre_logits else self.head(x)




# ---------------------------------------------------------------------------------------
# Registered variants: ViT-Ti/S/B/L with 16x16 patches at 224 (timm's vit_*_patch16_224)
# ---------------------------------------------------------------------------------------

_SIZES = {
    "t": dict(embed_dim=192, depth=12, num_heads=3),
    "s": dict(embed_dim=384, depth=12, num_heads=6),
    "b": dict(embed_dim=768, depth=12, num_heads=12),
    "l": dict(embed_dim=1024, depth=24, num_heads=16),
}


def vit_size(size: str, **kwargs) -> dict:
    """The arguments of ViT-Ti/S/B/L (``size`` in ``"tsbl"``) with 16x16 patches."""
    return {"patch_size": 16, **_SIZES[size], **kwargs}


@register_model
def vit_t_16(**kwargs) -> VisionTransformer:
    """ViT-Ti/16: C192, 12 blocks, 3 heads."""
    return VisionTransformer(**vit_size("t", **kwargs))


@register_model
def vit_s_16(**kwargs) -> VisionTransformer:
    """ViT-S/16: C384, 12 blocks, 6 heads."""
    return VisionTransformer(**vit_size("s", **kwargs))


@register_model
def vit_b_16(**kwargs) -> VisionTransformer:
    """ViT-B/16: C768, 12 blocks, 12 heads."""
    return VisionTransformer(**vit_size("b", **kwargs))


@register_model
def vit_l_16(**kwargs) -> VisionTransformer:
    """ViT-L/16: C1024, 24 blocks, 16 heads."""
    return VisionTransformer(**vit_size("l", **kwargs))
