"""Plain helper modules shared by the test folders (no tests here)."""
