"""Code every service shares: config, db, messaging, logging, auth, errors, health."""
