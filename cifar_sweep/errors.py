class UserError(Exception):
    """A mistake in the user's config or data: reported as one line, never as a traceback."""
