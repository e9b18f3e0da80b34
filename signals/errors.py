"""Errors raised by the detector maths."""


class SignalsError(Exception):
    """Root of every error raised by :mod:`signals`."""


class InvalidInputError(SignalsError, ValueError):
    """An input value is unusable (NaN, infinite, non-positive price, wrong shape...)."""
