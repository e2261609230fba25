"""The operator console and HTTP API: routes, accounts/sessions/tokens, the live event feed,
OpenAPI, the server, and the static files. May import every layer below (service, loop, domain,
ground), never ``commands``."""
