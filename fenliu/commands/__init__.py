"""The ``fenliu`` command line: serve, doctor, the demos and their stand-in platform, dial,
classify, offline replay and reports. The top floor: may import every package."""
