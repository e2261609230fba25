"""Declarative IVR flows (docs/flows.md): the flow file and its checks, prompts, pictures and one
caller's way through a flow (``runner``). May import the ground floor and ``asr.audio``."""
