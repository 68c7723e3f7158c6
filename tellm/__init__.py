"""tellm: real-time SDN traffic engineering with a learned TE head."""

__version__ = "0.1.0"
