"""Store-and-forward to the hospital: signing, the outbox pump, MQTT and HTTPS uplinks, receiver.

Modules are imported explicitly by their users (nothing registers itself here), so importing one
uplink does not pull in the other's dependencies.
"""
