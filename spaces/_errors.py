class LoraSearchError(Exception):
    """A problem the user can fix: bad input, a missing file, an unreachable storage.

    The CLI prints the message as one line on stderr and exits with code 2, so the
    message must say what is wrong and what to do about it.
    """


class SpaceError(LoraSearchError):
    """A search space, preset or training configuration that cannot be used."""


def first_line(error: BaseException) -> str:
    """The first line of an error's message (a database driver's own message where SQLAlchemy
    wraps one), or the error's type when it has none: what a one-line report shows."""
    text = str(getattr(error, "orig", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__
