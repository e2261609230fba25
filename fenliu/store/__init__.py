"""The record: database access over SQLite and PostgreSQL (``db``), the schema and its migrations
(``schema``), calls, orders, outbox, SMS, accounts (``record``), retention. May import the ground
floor, ``sip.protocol``, ``hotlines`` and ``bus``."""
