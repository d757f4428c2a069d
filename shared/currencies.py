"""ISO 4217 active currency codes (the set the APIs accept) and their minor units."""

from decimal import Decimal

ISO_4217 = frozenset("""
AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN BWP
BYN BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP
GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR
KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK
MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR
SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS
UAH UGX USD UYU UZS VES VND VUV WST XAF XCD XOF XPF YER ZAR ZMW ZWG
""".split())

# ISO 4217 minor-unit exponents that are not 2 (every other code above has 2 decimals).
# Amounts go to a payment provider in integer minor units: JPY 1500 is 1500, EUR 15.00 is 1500.
ZERO_DECIMAL = frozenset("BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX VND VUV XAF XOF XPF".split())
THREE_DECIMAL = frozenset("BHD IQD JOD KWD LYD OMR TND".split())


def exponent_of(currency: str) -> int:
    """Digits after the decimal point in ``currency``'s minor unit (JPY 0, EUR 2, KWD 3)."""
    code = currency.strip().upper()
    if code not in ISO_4217:
        raise ValueError(f"unknown currency {currency!r}")
    if code in ZERO_DECIMAL:
        return 0
    return 3 if code in THREE_DECIMAL else 2


def to_minor_units(amount, currency: str) -> int:
    """``amount`` (a Decimal or decimal string) as an integer count of minor units.

    Refuses an amount with more precision than the currency has (JPY 10.50):
    rounding money silently is how totals stop adding up.
    """
    scaled = Decimal(str(amount)).scaleb(exponent_of(currency))
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{amount} {currency} has more decimals than the currency's minor unit")
    return int(scaled)


def from_minor_units(minor: int, currency: str):
    """The Decimal amount of ``minor`` minor units of ``currency`` (1500 EUR cents -> 15.00)."""
    exponent = exponent_of(currency)
    return Decimal(minor).scaleb(-exponent).quantize(Decimal(1).scaleb(-exponent))
