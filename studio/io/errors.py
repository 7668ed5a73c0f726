"""The one exception type that means "the user's input is wrong"; CLIs print it as one line."""


class StudioInputError(ValueError):
    """Raised with a one-sentence message naming the bad input (file, field, value)."""
