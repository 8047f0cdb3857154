"""GhostLine: a one-time-pad group messenger.

Its authentication is information-theoretic, and its secrecy perfect, only as far as the
pad is uniform and independent; with a pad from os.urandom (the default) both are
computational. docs/SECURITY.md states what holds exactly.
"""

__version__ = "0.1.0"
