"""RQ job functions (one module per kind of work) and the worker entry point."""
