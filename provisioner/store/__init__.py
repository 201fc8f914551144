"""The inventory store: one database (SQLite by default, PostgreSQL by URL)."""
