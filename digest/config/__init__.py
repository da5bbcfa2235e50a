"""The configuration: its schema, grouped by stage (`schema`), and how config.yaml is read (`load`)."""

from digest.config.load import ENV_DATA_DIR, SECTIONS, Section, default_config_path, load_config
from digest.config.schema import (
    ArxivConfig,
    BatchDeadline,
    BiorxivConfig,
    Config,
    EmailConfig,
    LLMConfig,
    MedrxivConfig,
    OutputConfig,
    PreprintServerConfig,
    Prices,
    Profile,
    ScheduleConfig,
    SMTPConfig,
    TokenPrices,
    WebConfig,
)

__all__ = [
    "ENV_DATA_DIR",
    "SECTIONS",
    "ArxivConfig",
    "BatchDeadline",
    "BiorxivConfig",
    "Config",
    "EmailConfig",
    "LLMConfig",
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
    "default_config_path",
    "load_config",
]
