"""User-facing errors: the CLI prints them on one line and exits with status 2."""


class PyroVAEError(Exception):
    """Bad input (unknown name, missing or corrupt data, invalid setting, foreign run folder).

    The message is one line that says what is wrong and how to fix it.
    """


class TrainingDiverged(PyroVAEError):
    """The loss became NaN or infinite; the last good checkpoint is left as it was."""
