"""The service shell: command line, settings, wiring of the stages, offline replay, doctor."""
