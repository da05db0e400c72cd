"""Weights in and out: every supported checkpoint format goes through ``load_checkpoint``."""

from .load import LoadReport, load_checkpoint, read_state_dict

__all__ = ["LoadReport", "load_checkpoint", "read_state_dict"]
