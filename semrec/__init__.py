"""semrec: sequential recommendation with semantic codes."""

__version__ = "0.1.0"
