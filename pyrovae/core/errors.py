"""User-facing errors: the CLI prints them on one line and exits with status 2."""


class PyroVAEError(Exception):
    """Bad input (unknown name, missing or corrupt data, invalid setting, foreign run folder).

    The message is one line that says what is wrong and how to fix it.
    """


class Note(UserWarning):
    """Something a user should know that stops nothing (an old file loaded unchecked); the CLI
    prints it as one line, ``pyrovae: note: ...``."""


class ShapeError(PyroVAEError):
    """The data's shape (C, H, W) is one a part (a network, a likelihood) cannot take."""


class TrainingDiverged(PyroVAEError):
    """The loss became NaN or infinite; the last good checkpoint is left as it was."""


def first_line(error: BaseException) -> str:
    """An exception's message as one line: its first non-empty line, else its type's name."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
