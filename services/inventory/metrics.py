"""Prometheus metrics of the inventory service."""

from prometheus_client import Counter

RESERVATIONS = Counter("inventory_reservations_total", "Reservation requests by outcome",
                       ["outcome"])  # held | replayed | insufficient | conflict
RESERVATIONS_RELEASED = Counter("inventory_reservations_released_total",
                                "Reservations released, by reason", ["reason"])
RESERVATIONS_CONFIRMED = Counter("inventory_reservations_confirmed_total",
                                 "Reservations confirmed by order.created")
