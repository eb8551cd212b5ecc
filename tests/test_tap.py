"""The tap registry: every installed tap sees each event in order; a failing tap is removed, not fatal."""

from socs_tcp import _tap
from tests.conftest import RecordingTap as Recording


class Broken(Recording):
    def sent(self, link, data):
        raise RuntimeError('tap bug')


def test_every_tap_sees_each_event_in_order_until_removed():
    first, second = Recording(), Recording()
    _tap.add_tap(first)
    _tap.add_tap(second)
    try:
        _tap.notify_opened('dev:1')
        _tap.notify_sent('dev:1', b'Q?\n')
        _tap.notify_received('dev:1', b'1\n')
        _tap.remove_tap(second)
        _tap.notify_closed('dev:1', 'peer closed')
    finally:
        _tap.remove_tap(first)
    assert first.events == [('opened', 'dev:1'), ('sent', 'dev:1', b'Q?\n'), ('received', 'dev:1', b'1\n'),
                            ('closed', 'dev:1', 'peer closed')]
    assert second.events == first.events[:3]
    assert _tap.taps == ()


def test_a_tap_that_raises_is_removed_and_the_others_still_see_the_event():
    broken, good = Broken(), Recording()
    _tap.add_tap(broken)
    _tap.add_tap(good)
    try:
        _tap.notify_sent('dev:1', b'x')
        assert broken not in _tap.taps
        assert good.events == [('sent', 'dev:1', b'x')]
    finally:
        _tap.remove_tap(good)
        _tap.remove_tap(broken)
