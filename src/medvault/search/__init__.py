"""Full-text search: the index (PostgreSQL tsvector + GIN, SQLite FTS5) and its queries."""
