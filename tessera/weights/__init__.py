"""Weights in and out: every supported checkpoint format goes through ``load_checkpoint``;
``save_pretrained`` / ``from_pretrained`` are tessera's own format."""

from .load import LoadReport, load_checkpoint, read_state_dict
from .pretrained import convert_checkpoint, from_pretrained, inflate_checkpoint, save_pretrained

__all__ = [
    "LoadReport", "load_checkpoint", "read_state_dict", "save_pretrained", "from_pretrained",
    "convert_checkpoint", "inflate_checkpoint",
]
