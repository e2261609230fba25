"""Declarative IVR flows (prompts, DTMF menus, confirm-and-transfer) and their runner.

Not built yet: the automated overflow front comes after live calls (issue #3).
"""
