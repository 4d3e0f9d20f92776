class LoraSearchError(Exception):
    """A problem the user can fix: bad input, a missing file, an unreachable storage.

    The CLI prints the message as one line on stderr and exits with code 2, so the
    message must say what is wrong and what to do about it.
    """


class SpaceError(LoraSearchError):
    """A search space, preset or training configuration that cannot be used."""
