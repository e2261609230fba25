"""The front before the workers: the generated Kamailio dispatcher over workers and instances,
its probing and its fail-open to the operators. May import the ground floor and ``sip.protocol``."""
