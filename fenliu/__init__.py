"""fenliu (分流): divert non-police 110 calls to 12345 and its sibling hotlines, safely."""

__version__ = "0.1.0"
