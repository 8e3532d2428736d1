"""Argument parsing helpers: one-line usage errors and `key=value` arguments."""

from __future__ import annotations

import argparse


class UsageError(Exception):
    """Bad command-line input; main prints it on one line and exits 2."""

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(f"{prog}: error: {message}")


class ArgumentParser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of printing the usage block and exiting."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(self.prog, message)


def key_value(text: str) -> tuple[str, str]:
    """`key=value` -> (key, value); the value may be empty, the key may not."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value


def limit_pair(text: str) -> tuple[str, int]:
    """`resource=N` with N an integer >= -1 (-1: unlimited)."""
    key, value = key_value(text)
    try:
        limit = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"limit of {key} must be an integer, got {value!r}") from None
    if limit < -1:
        raise argparse.ArgumentTypeError(f"limit of {key} must be -1 (unlimited) or greater, got {limit}")
    return key, limit


def positive_int(text: str) -> int:
    """An integer of 1 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def port_number(text: str) -> int:
    """A TCP port, 1 to 65535."""
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 1 to 65535, got {value}")
    return value


def non_negative_float(text: str) -> float:
    """A number of 0 or more (`inf`: no limit)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value < 0 or value != value:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value
