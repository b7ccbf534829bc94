"""The one exception type for bad user input (files, ids, configs)."""


class InputError(ValueError):
    """Bad input: the message names what is wrong and what to change, on one line."""
