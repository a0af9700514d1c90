"""The one exception every user-facing data problem raises."""


class DataError(ValueError):
    """A dataset, file, split, column or value that cannot be used; the message names it and says what to do."""
