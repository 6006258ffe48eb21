"""The exception raised for a config file that cannot be used."""


class ConfigError(ValueError):
    """An invalid or unreadable configuration.

    The message names the key, the offending value and how to fix it, because it is shown to
    the user as the reason the proxy refused to start or refused an edit.
    """

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key

    @classmethod
    def invalid(cls, key: str, value: object, fix: str) -> "ConfigError":
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        return cls(f"config key '{key}' has invalid value {shown}: {fix}", key=key)
