"""Inventory service: catalog, prices, stock, and reservations held for orders."""
