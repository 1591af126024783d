"""Database tables and the dataclasses passed to workflows and activities."""
