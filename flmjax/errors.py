"""The base of every error flmjax raises for something a user can fix: a bad config, input or file.

Launchers catch `FlmjaxError`, print `error: <message>` (one line naming the file or field) and exit 2.
"""


class FlmjaxError(ValueError):
    """A user-fixable problem, said in one line."""
