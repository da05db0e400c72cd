"""Training, fine-tuning and evaluation: recipes, the loop, checkpoints and metrics."""

from .checkpoint import load_trained_model, read_run_info
from .engine import Trainer
from .evaluation import evaluate, predict_images, predict_videos
from .recipe import Recipe, load_recipe, shipped_recipes

__all__ = ["Recipe", "Trainer", "evaluate", "load_recipe", "load_trained_model", "predict_images", "predict_videos",
           "read_run_info", "shipped_recipes"]
