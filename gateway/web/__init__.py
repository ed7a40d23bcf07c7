"""The gateway's HTTP side (aiohttp): ``/healthz``, the OpenAI-compatible ``/v1`` API, the
consultations API, and the routes other modules register through
:func:`gateway.web.app.build_app`'s ``setup`` callbacks.

Modules: :mod:`.app` (the application, ``/healthz``, serving), :mod:`.services` (the application
keys and the assistant's state as the routes see it), :mod:`.errors` (the JSON error shape and
request bodies), :mod:`.auth`, :mod:`.openai_api` with :mod:`.openai_models` and
:mod:`.embeddings`, :mod:`.consultations`, :mod:`.sse`; :mod:`.settings` is light (the
configuration imports it).
"""
