"""Embedded default data (scikit-learn digits) and small models trained by our own code."""
from . import attention, cnn, mlp, timm_models  # noqa: F401  (register the models)
from .data import load_digits_split
from .registry import ZooEntry, accuracy, cache_dir, get_entry, list_models, load, register_model
from .resolve import ModelBundle, resolve_model

__all__ = ["ModelBundle", "ZooEntry", "accuracy", "cache_dir", "get_entry", "list_models", "load",
           "load_digits_split", "register_model", "resolve_model"]
