"""Wire formats only, no sockets: what travels, and how it is encoded and checked.

- :mod:`iiotbed.protocols.sparkplug` — Sparkplug B 3.0 topics, datatypes and payloads
- :mod:`iiotbed.protocols.vda5050` — VDA 5050 2.1 topics, messages and official schemas
- :mod:`iiotbed.protocols.opcua` — the browse names and units the OPC UA servers and
  the gateway's collector agree on
- :mod:`iiotbed.protocols.uns` — the gateway's UNS topics and JSON codec

Devices, the gateway and the platform import from here; nothing here imports them.
"""

__all__: list[str] = []
