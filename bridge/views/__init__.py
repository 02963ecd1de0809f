"""Blueprints: thin views that translate HTTP into calls and results into pages or JSON."""

MAX_ROW_ID = 2**63 - 1  # SQLite's largest integer


def parse_id(value: str | None) -> int | None:
    """A row id from a query string: ASCII digits that fit SQLite's integer, else None."""
    if not (value and value.isascii() and value.isdigit()):
        return None
    digits = value.lstrip("0") or "0"
    # Length first: int() of thousands of digits is slow, and past 4300 refused.
    if len(digits) > len(str(MAX_ROW_ID)) or int(digits) > MAX_ROW_ID:
        return None
    return int(digits)
