"""The one error users see for bad input, raised by every check at the door (search/door/spec.py,
search/door/preflight.py, search/place/storage.py); the CLI prints it and exits with code 2 before anything
starts."""


class SpecError(Exception):
    """Bad input: the message is one line naming the file, field or flag, and what would be right."""
