"""Errors a user can cause and fix: the CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    """A problem with the user's config, paths or data, not a bug in llmdistill."""


class UnreadableGold(UserError):
    """A row's gold answer cannot be read: the row is counted and reported, and the run goes on."""
