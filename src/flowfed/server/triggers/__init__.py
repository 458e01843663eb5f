"""The trigger service: flows that start themselves on a schedule, an event or a condition.

:mod:`.model` holds the definitions (pure); :mod:`.service` stores and fires them. See
docs/triggers.md.
"""
