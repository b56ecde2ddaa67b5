"""The one exception type for a user's mistake.

The command line prints its message as a single line and exits with status 2; anything
else that escapes is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A mistake the user can fix: a bad path, a bad file, an option out of range."""
