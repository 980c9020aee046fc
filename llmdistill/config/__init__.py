"""One YAML file per run, one section per stage; every section validated with ``extra="forbid"``.

``root`` holds the whole config and the checks that span sections; each section lives in a module
of its name (``data``, ``teacher``, ``generate``, ``filter``, ``train`` with ``student`` and ``kd``,
``evaluate``, ``export``, ``curve``); ``base`` marks every setting content or operational; ``file`` reads
YAML, applies ``--set`` overrides, words validation errors and upgrades configs saved by earlier
versions.
"""

from llmdistill.config.base import Section
from llmdistill.config.curve import CurveConfig
from llmdistill.config.data import DataConfig
from llmdistill.config.evaluate import BaselineModel, EvaluateConfig
from llmdistill.config.export import ExportConfig
from llmdistill.config.filter import FILTERS, FilterConfig
from llmdistill.config.generate import GenerateConfig, RaySection
from llmdistill.config.root import Config
from llmdistill.config.teacher import TeacherConfig
from llmdistill.config.train import KDConfig, LoraSection, StudentConfig, TrainConfig

__all__ = [
    "FILTERS",
    "BaselineModel",
    "Config",
    "CurveConfig",
    "DataConfig",
    "EvaluateConfig",
    "ExportConfig",
    "FilterConfig",
    "GenerateConfig",
    "KDConfig",
    "LoraSection",
    "RaySection",
    "Section",
    "StudentConfig",
    "TeacherConfig",
    "TrainConfig",
]
