"""User-facing errors: the CLI turns these into one line on stderr and exit code 2 (``UserError``) or 130
(``Interrupted``)."""


class UserError(Exception):
    """A mistake in what the user asked for (bad name, missing file, impossible option).

    The message must be one line that says what is wrong and, where possible, how to fix it.
    """


class Interrupted(Exception):
    """Ctrl-C (SIGINT) honoured cleanly: the work in progress was saved; the message says how to continue."""
