"""Errors a user can fix. The CLI prints their message alone, without a traceback."""


class ConvexpError(Exception):
    """Base class: a problem with the user's config, data or machine."""


class ConfigError(ConvexpError):
    """A config value is out of range or inconsistent."""


class ModelBuildError(ConvexpError):
    """The requested architecture cannot be built (e.g. the feature map collapses)."""


class DataError(ConvexpError):
    """A dataset file is missing, truncated, corrupted or malformed."""


class DeviceError(ConvexpError):
    """The requested device is not available on this machine."""
