"""Delivery service: one shipment per order, carrier status updates, a carrier simulator."""
