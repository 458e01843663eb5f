"""The trigger service: flows that start themselves on a schedule, an event or a condition.

:mod:`.model` holds the definitions (pure); :mod:`.store` stores and describes them (the
API's side); :mod:`.sources` reads the tables event triggers watch; :mod:`.service` fires
them, exactly once. See docs/triggers.md.
"""
