"""Order service: places, lists and cancels orders; follows deliveries."""
