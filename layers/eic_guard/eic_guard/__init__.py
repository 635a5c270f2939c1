"""eic-guard: keep EC2 Instance Connect working on opted-in instances."""

__version__ = "0.1.0"
