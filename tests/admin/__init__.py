"""The admin API, page, CLI, monitoring SQL and metrics."""
