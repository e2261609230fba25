"""The pjsua2 processes: the SIP worker (one endpoint, its calls, taps, prompts), the shared
endpoint set-up and frame copy, and the standalone peer (test/demo hotline, seat, caller).
May import the ground floor and the rest of ``sip`` (protocol, conversation, dialogs)."""
