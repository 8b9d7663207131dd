"""Numbered schema migrations, applied in order by engine.db.migrate()."""
