"""What the daemons share besides the wire types: the strict, versioned TOML config loader and
sd_notify.  Ground floor, beside ``tide.api``: imported by coordinator and noded, imports only
``tide.api``."""

from tide.daemon._config_file import Migration, StrictConfig, describe_validation_error, load_toml_config
from tide.daemon._sdnotify import notify, serve_until_signalled, watchdog_interval

__all__ = [
    "Migration",
    "StrictConfig",
    "describe_validation_error",
    "load_toml_config",
    "notify",
    "serve_until_signalled",
    "watchdog_interval",
]
