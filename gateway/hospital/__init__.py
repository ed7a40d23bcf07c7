"""The hospital side of forwarding: receive signed Bundles, verify, deduplicate, deliver.

A separate deployable from the gateway: it runs next to the hospital's broker and FHIR server and
shares with the gateway only the wire contract (MQTT topics, signature format; see
``docs/contracts.md``) and the code that implements it (:mod:`gateway.forward`). Nothing in the
gateway imports this package.
"""
