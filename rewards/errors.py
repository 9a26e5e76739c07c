"""The rewards' own error type, so that the package stands without the trainer.

A `RewardError` is a mistake the user can fix (an unknown reward term, an
encoder that does not load, an example without the field a reward reads):
the command-line entry points print its message without a traceback, as they
do for `grpo.run.errors.UserError`.
"""


class RewardError(Exception):
    """A reward or reward encoder that cannot be built, loaded or fed; printed without a traceback."""
