"""Errors that tessera raises for bad input: each says in one line what is wrong.

The command line prints them as one line (a traceback only with ``--debug``)."""


class TesseraError(Exception):
    """Base class of the errors about the user's input (files, names, configs)."""


class UnknownModelError(TesseraError, ValueError):
    """A model name that is not registered."""


class CheckpointError(TesseraError, ValueError):
    """A checkpoint that cannot be read or does not fit the model."""


class ConfigError(TesseraError, ValueError):
    """A recipe or an override with an unknown key or a value of the wrong type."""


class DataError(TesseraError, ValueError):
    """A data set that cannot be used (missing, empty, or too many bad samples)."""


class InputShapeError(TesseraError, ValueError):
    """An input tensor a model cannot take: wrong rank, channel count or dtype, or smaller
    than one patch. The message names the expected and the received shape."""
