"""The one exception type for bad user input.

Every problem a user can fix (a missing file, an empty labelmap, an unknown model) raises
:class:`InputError` with a one-line message that names the problem and what to do. The CLI
turns it into exit code 2 and a message on stderr; the Slicer module shows it in the panel.
"""


class InputError(ValueError):
    """Bad input that the user can fix. ``str(err)`` is a complete one-line message."""
