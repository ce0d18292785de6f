"""Contacts linked to users, link codes and moving archives."""
