"""Money amounts: decimal strings to integer minor units by the currency's exponent.

Floats are refused (``0.1 + 0.2``); so is any amount with more precision than the currency has.
The exponents follow Stripe's list of zero-decimal and three-decimal currencies.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from .errors import AmountError

ZERO_DECIMAL = frozenset(
    "BIF CLP DJF GNF JPY KMF KRW MGA PYG RWF UGX VND VUV XAF XOF XPF".split()
)
THREE_DECIMAL = frozenset("BHD JOD KWD OMR TND".split())


def exponent(currency: str) -> int:
    code = currency.upper()
    if code in ZERO_DECIMAL:
        return 0
    if code in THREE_DECIMAL:
        return 3
    return 2


def to_minor_units(amount: str | int, currency: str) -> int:
    """``("150.00", "EUR") -> 15000``, ``("500", "JPY") -> 500``; AmountError otherwise."""
    if isinstance(amount, bool) or isinstance(amount, float):
        raise AmountError(f"amount {amount!r} must be a decimal string such as \"150.00\", not a float")
    if len(currency) != 3 or not currency.isalpha():
        raise AmountError(f"currency {currency!r} is not a three-letter ISO code")
    try:
        value = Decimal(str(amount).strip())
    except InvalidOperation:
        raise AmountError(f"amount {amount!r} is not a decimal number") from None
    if not value.is_finite() or value <= 0:
        raise AmountError(f"amount {amount!r} must be a positive number")
    digits = exponent(currency)
    minor = value.scaleb(digits)
    if minor != minor.to_integral_value():
        raise AmountError(f"amount {amount!r} has more than {digits} decimal places for {currency.upper()}")
    return int(minor)
