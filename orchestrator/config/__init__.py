"""The study config: one YAML file, parsed into typed, validated objects, a module per group of sections
(`training`, `hardware`, `stages`) and the whole (`study`). Each section that configures a runtime object
builds it (`to_...()`)."""

from orchestrator.config.base import ConfigError
from orchestrator.config.hardware import MeasureConfig, RayConfig, TargetConfig
from orchestrator.config.stages import METRICS, STRATEGIES, Constraint, ExportConfig, FinetuneConfig, SearchConfig
from orchestrator.config.study import StudyConfig, config_as_dict, load_study_config, study_config_from_dict
from orchestrator.config.training import NON_TRAINING_KEYS, SupernetConfig, TaskConfig

__all__ = ["METRICS", "NON_TRAINING_KEYS", "STRATEGIES", "ConfigError", "Constraint", "ExportConfig", "FinetuneConfig",
           "MeasureConfig", "RayConfig", "SearchConfig", "StudyConfig", "SupernetConfig", "TargetConfig", "TaskConfig",
           "config_as_dict", "load_study_config", "study_config_from_dict"]
