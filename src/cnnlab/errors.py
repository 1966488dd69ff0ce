"""The project's own exceptions: one family for every mistake a user can fix."""


class CnnlabError(Exception):
    """A problem with the user's input (file, flag, data, run folder).

    The message says what is wrong, where, and how to fix it. The CLI prints it as
    one line and exits with status 2; any other exception is a bug and keeps its
    traceback.
    """


class SpecError(CnnlabError, ValueError):
    """An architecture (or study) document that cannot be used."""


class DataError(CnnlabError):
    """A data set that is missing, corrupt or of the wrong shape."""


class RunError(CnnlabError):
    """A run folder that is missing, incomplete or of another format."""
