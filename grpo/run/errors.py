"""The engine's exception types for mistakes a user can make.

Anything a user can cause (a bad config value, a malformed data line, a model
name that does not resolve) is raised as a `UserError` subclass whose message
says what is wrong and what to do. The command-line entry points catch it and
print the message without a traceback; everything else is a bug and keeps its
traceback. The rewards package has its own, `rewards.errors.RewardError`,
which the entry points print in the same way.
"""

import sys

from rewards.errors import RewardError


class UserError(Exception):
    """A problem the user can fix; printed without a traceback."""


class ConfigError(UserError):
    """An unknown key, a wrong type or an out-of-range value in a config."""


class DataError(UserError):
    """A data file that is missing, empty, not UTF-8 or malformed."""


class ModelError(UserError):
    """A model name or folder that cannot be resolved or loaded."""


class CheckpointError(UserError):
    """A checkpoint that is missing, damaged, or could not be written."""


USER_ERRORS = (UserError, RewardError)  # printed as one line, without a traceback


def exit_code_of(command) -> int:
    """Run `command()` for a tool's main: 0, or 2 with a user's mistake (USER_ERRORS) as one line on stderr."""
    try:
        command()
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
