"""GhostLine: a one-time-pad group messenger with information-theoretic authentication."""

__version__ = "0.1.0"
