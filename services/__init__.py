"""The platform's services; each owns one schema and talks to the others by messages."""
