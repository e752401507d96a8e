"""Errors that xpnet raises for bad input: each message is one line saying what is
wrong and how to fix it, so the CLI can print it as it is and exit with status 2."""


class XpnetError(ValueError):
    """Bad input or configuration; the message is a single line meant for people."""


class DeviceError(XpnetError):
    """The requested device or backend cannot be used on this machine."""


class DivergenceError(XpnetError):
    """Training produced a non-finite loss (NaN or inf)."""


class DatasetError(XpnetError):
    """A dataset cannot be found, downloaded or read; the message is one line."""
