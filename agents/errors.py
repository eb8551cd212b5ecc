"""Errors the sample drivers raise for replies they cannot trust.

A device that answers with the wrong bytes is not a network failure, so these
are not ``ConnectionError`` s; the agents treat both as a device fault.
"""


class ReplyError(ValueError):
    """A reply was malformed, truncated or did not match its request.

    The driver never returns data decoded from such a reply.
    """


class DeviceReportedError(RuntimeError):
    """The device understood the exchange but reported an error (e.g. SCPI error queue).

    Attributes
    ----------
    errors : list of (int, str)
        The device's error codes and messages, oldest first.
    """

    def __init__(self, errors):
        self.errors = list(errors)
        text = '; '.join(f'{code}, "{msg}"' for code, msg in self.errors)
        super().__init__(f'device reported: {text}')
