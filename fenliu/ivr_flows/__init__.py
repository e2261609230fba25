"""Declarative IVR flows (docs/flows.md): the flow file and its checks (``flow``), the prompts
made from recordings or Chinese text (``prompts``), a picture of a flow (``graph``) and one
caller's way through it (``runner``). The service runs them in ``fenliu.service.ivr``."""
