"""Blueprints: thin views that translate HTTP into calls and results into pages or JSON."""


def parse_id(value: str | None) -> int | None:
    """A row id from a query string: ASCII digits that fit SQLite's integer, else None."""
    if value and value.isascii() and value.isdigit() and len(value) <= 18:
        return int(value)
    return None
