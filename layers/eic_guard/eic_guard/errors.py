"""The few domain exceptions eic-guard raises."""


class EicGuardError(Exception):
    """Base class: everything eic-guard raises on purpose."""


class ConfigurationError(EicGuardError):
    """A setting, argument or credential is wrong; nothing has been touched."""


class IpRangesError(EicGuardError):
    """ip-ranges.json could not be fetched or failed verification.

    `reason` is a short fixed token (md5-mismatch, invalid-json, ...) used in metrics and logs.
    """

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class InvalidEvent(EicGuardError):
    """The invocation event is not what the handler accepts; `reason` is a short token for metrics."""

    def __init__(self, message: str, reason: str = "malformed-event"):
        super().__init__(message)
        self.reason = reason
