"""What people rely on the archive for: exports, retention, legal holds and search."""
