"""Building blocks shared by every model family."""

from .attention import Attention, WindowAttention, attend
from .block import Block, ClassAttention, ClassAttentionBlock, layer_scale, pool_tokens, prepend_tokens
from .drop import DropPath, drop_path
from .helpers import check_input, to_ntuple
from .mlp import Mlp
from .patch_embed import PatchEmbed
from .pos_embed import fit_checkpoint_pos_embed, resize_pos_embed
from .windows import WindowPlan, get_plan

__all__ = [
    "Attention", "WindowAttention", "attend", "DropPath", "drop_path", "check_input", "to_ntuple",
    "Mlp", "PatchEmbed", "resize_pos_embed", "WindowPlan", "get_plan",
    "Block", "ClassAttention", "ClassAttentionBlock", "layer_scale", "pool_tokens", "prepend_tokens",
    "fit_checkpoint_pos_embed",
]
