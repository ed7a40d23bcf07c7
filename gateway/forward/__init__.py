"""Store-and-forward to the hospital: signing, the outbox pump, the MQTT and HTTPS uplinks.

Modules are imported explicitly by their users (nothing registers itself here), so importing one
uplink does not pull in the other's dependencies. The receiving end is :mod:`gateway.hospital`.
"""
