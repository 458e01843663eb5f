"""Run events: the bus that carries committed events to live watchers."""

from flowfed.events.bus import Bus, Event, MemoryBus, Subscription
from flowfed.events.remote import SUPPORTED, BusURLError, NatsBus, RedisBus, make_bus

__all__ = [
    "SUPPORTED",
    "Bus",
    "BusURLError",
    "Event",
    "MemoryBus",
    "NatsBus",
    "RedisBus",
    "Subscription",
    "make_bus",
]
