"""Hugging Face transformers export and import: Llama for MHA/GQA/MQA, DeepseekV3 for MLA."""

from tinyseek.export.checkpoint import (
    export_model,
    export_run,
    import_model,
    load_hf_weights,
    to_hf_model,
)
from tinyseek.export.config_map import hf_architecture, hf_config, model_config_from_hf

__all__ = [
    "export_model",
    "export_run",
    "hf_architecture",
    "hf_config",
    "import_model",
    "load_hf_weights",
    "model_config_from_hf",
    "to_hf_model",
]
