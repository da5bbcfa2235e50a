"""The configuration: its schema, a module per part in the order a run uses them (sources, llm, profiles, delivery;
the whole in `schema`), and how config.yaml is read (`load`)."""

from digest.config.delivery import EmailConfig, OutputConfig, SMTPConfig
from digest.config.library import LibraryConfig, ZoteroConfig
from digest.config.llm import BatchDeadline, LLMConfig, Prices, TokenPrices
from digest.config.load import ENV_DATA_DIR, SECTIONS, Section, default_config_path, load_config
from digest.config.profiles import Profile
from digest.config.schema import Config, ScheduleConfig, WebConfig
from digest.config.sources import ArxivConfig, BiorxivConfig, MedrxivConfig, PreprintServerConfig

__all__ = [
    "ENV_DATA_DIR",
    "SECTIONS",
    "ArxivConfig",
    "BatchDeadline",
    "BiorxivConfig",
    "Config",
    "EmailConfig",
    "LLMConfig",
    "LibraryConfig",
    "MedrxivConfig",
    "OutputConfig",
    "PreprintServerConfig",
    "Prices",
    "Profile",
    "SMTPConfig",
    "ScheduleConfig",
    "Section",
    "TokenPrices",
    "WebConfig",
    "ZoteroConfig",
    "default_config_path",
    "load_config",
]
