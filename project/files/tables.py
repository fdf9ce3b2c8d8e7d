"""Cells of the CSV files this project writes (predictions, a sweep's trials), safe to open in a spreadsheet."""

from __future__ import annotations

_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""What makes a spreadsheet read a cell as a formula (OWASP, "CSV Injection")."""


def spreadsheet_safe(text: str) -> str:
    """``text`` with a single quote in front when it starts like a formula (a file named ``=HYPERLINK(...).png``, a
    class folder named ``@SUM(...)``, an error message or a categorical choice of a sweep): the spreadsheet shows it
    as text, and runs nothing."""
    return f"'{text}" if text.startswith(_FORMULA_STARTS) else text
