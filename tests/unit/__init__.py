"""Tests that need no server: payload reading, schemas, signatures."""
