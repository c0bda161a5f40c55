"""The one exception type for mistakes a user can make (config, data, files).

Messages name the key or file, what was expected and what was found; nothing else goes here.
"""


class MegatronSotaError(Exception):
    """A user-facing error: bad config value, bad data file, bad checkpoint directory."""
