"""One YAML file per run, one section per stage; every section validated with ``extra="forbid"``.

``root`` holds the whole config and the stage hashes; each stage's sections live in a module of
the stage's name; ``file`` reads YAML, applies ``--set`` overrides and words validation errors.
"""

from llmdistill.config.base import Section
from llmdistill.config.evaluate import BaselineModel, EvaluateConfig
from llmdistill.config.export import ExportConfig
from llmdistill.config.filter import FILTERS, FilterConfig
from llmdistill.config.generate import DataConfig, GenerateConfig, ModelConfig
from llmdistill.config.root import STAGES, Config
from llmdistill.config.train import KDConfig, LoraSection, StudentConfig, TrainConfig

__all__ = [
    "BaselineModel", "Config", "DataConfig", "EvaluateConfig", "ExportConfig", "FILTERS", "FilterConfig", "GenerateConfig",
    "KDConfig", "LoraSection", "ModelConfig", "STAGES", "Section", "StudentConfig", "TrainConfig",
]
