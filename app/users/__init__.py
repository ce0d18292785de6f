"""Users: Chatwoot contacts linked to users, link codes, and moving archives between buckets."""
