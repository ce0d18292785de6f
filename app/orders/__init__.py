"""Orders: a message (or transcript) becomes a note, a command, an answer or a content order."""
