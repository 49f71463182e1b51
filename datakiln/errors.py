"""Domain exceptions. Library code raises these; the CLI prints one line each."""


class DatakilnError(Exception):
    """Base for every error datakiln reports to a user.

    The message must say where (file, key or row), what was expected, what was
    found, and the command or edit that fixes it.
    """

    exit_code = 2


class ConfigError(DatakilnError):
    """A declaration in conf/ or params.yaml is missing, misspelt or mistyped."""


class StaleParamsError(ConfigError):
    """params.yaml no longer matches what conf/ composes to."""


class SourceError(DatakilnError):
    """A source cannot be found or read as declared."""


class SchemaError(DatakilnError):
    """Data does not fit the declared or inferred schema."""


class GuardError(DatakilnError):
    """A stage guard stopped the build (for example dedup removing too much)."""


class GateError(DatakilnError):
    """A quality gate failed; the build stops before split and publish."""

    exit_code = 3


class SecretError(DatakilnError):
    """A secret cannot be found, decrypted or verified."""


class LakeFSError(DatakilnError):
    """The lakeFS server refused or could not complete an operation."""
