"""SQL shipped with the engine: numbered migrations and named queries (see engine.queries)."""
