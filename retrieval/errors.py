"""The one exception type for bad user input (files, ids, configs)."""


class InputError(ValueError):
    """Bad input: the message names what is wrong and what to change, on one line."""


def first_ids(ids: list, shown: int = 5) -> str:
    """The first ``shown`` ids, quoted and comma-separated, for messages about many bad ids."""
    return ", ".join(repr(i) for i in ids[:shown])
