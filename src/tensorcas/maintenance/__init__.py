"""Whole-store operations: verify, and (in sibling modules) gc, du, diff, import and export.

Each is one library function that the command line calls; none needs the command line.
"""

from __future__ import annotations

from .verify import Finding, VerifyReport, verify

__all__ = ["Finding", "VerifyReport", "verify"]
