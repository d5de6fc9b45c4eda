"""Embedded default data (scikit-learn digits) and small models trained by our own code."""
from . import attention, cnn, mlp, timm_models  # noqa: F401  (register the models)
from .data import load_digits_split
from .datasets import LoadedData, calibration_loader, check_model_fits, load_data
from .errors import SpecError
from .model_spec import LoadedModel, load_model, load_weights
from .registry import (ZooEntry, accuracy, cache_dir, get_entry, list_models, load, register_model,
                       unregister_model)
from .resolve import ModelBundle, resolve_model

__all__ = ["LoadedData", "LoadedModel", "ModelBundle", "SpecError", "ZooEntry", "accuracy",
           "cache_dir", "calibration_loader", "check_model_fits", "get_entry", "list_models",
           "load", "load_data", "load_digits_split", "load_model", "load_weights",
           "register_model", "resolve_model", "unregister_model"]
