"""Run events: the bus that carries committed events to live watchers."""

from flowfed.events.bus import Bus, Event, MemoryBus, Subscription

__all__ = ["Bus", "Event", "MemoryBus", "Subscription"]
