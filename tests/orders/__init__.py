"""Notes, commands, clarifications, orders and drafting."""
