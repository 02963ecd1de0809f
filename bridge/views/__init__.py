"""Blueprints: thin views that translate HTTP into calls and results into pages or JSON."""
