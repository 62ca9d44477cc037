"""Kustomer outbound webhooks: a receiver that turns events into a queue of conversation ids.

An optional extra (``pip install 'kustomer-singer-tap[webhooks]'``), kept out of the
tap itself: the tap is a batch program Meltano starts, while the receiver is a
long-running service. Nothing here is imported by ``tap_kustomer``; the receiver's
web stack (Starlette, uvicorn) and the PostgreSQL driver are imported only by the
modules that need them, so the queue and the registration work without them.

- :mod:`~tap_kustomer.webhooks.queue`: the durable queue (SQLite or PostgreSQL).
- :mod:`~tap_kustomer.webhooks.signature`: the HMAC Kustomer signs each delivery with.
- :mod:`~tap_kustomer.webhooks.envelope`: which conversation an event is about.
- :mod:`~tap_kustomer.webhooks.receiver`: the HTTP app.
- :mod:`~tap_kustomer.webhooks.register`: creating the webhook through the API.
- :mod:`~tap_kustomer.webhooks.cli`: the ``tap-kustomer-webhooks`` command.
"""
