"""Shared parsing of SCPI-style messages for the simulated GPIB and serial instruments."""

from __future__ import annotations

from collections.abc import Callable


def split_message(message: str) -> list[str]:
    """The commands of one message: ``;``-separated, blanks and CR trimmed, empty ones dropped."""
    return [part.strip() for part in message.replace('\r', '').split(';') if part.strip()]


def header_and_argument(command: str) -> tuple[str, str]:
    """``'VOLT 3.5'`` -> ``('VOLT', '3.5')``; the header upper-cased."""
    header, _, argument = command.partition(' ')
    return header.upper(), argument.strip()


def on_off(argument: str) -> bool | None:
    """SCPI boolean (``ON``/``OFF``/``1``/``0``), or None if it is not one."""
    word = argument.strip().upper()
    if word in ('ON', '1'):
        return True
    if word in ('OFF', '0'):
        return False
    return None


def number(argument: str) -> float | None:
    """A numeric argument, or None if it is not a number."""
    try:
        return float(argument)
    except ValueError:
        return None


def answer_all(message: str, answer_one: Callable[[str], str | None]) -> str | None:
    """Run each command of ``message``; the replies of the queries joined by ``;``."""
    replies = [reply for reply in map(answer_one, split_message(message)) if reply is not None]
    return ';'.join(replies) if replies else None
