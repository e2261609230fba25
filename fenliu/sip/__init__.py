"""pjsua2 side of fenliu: one endpoint per process (the wheel holds four calls per endpoint).
May import the ground floor only (no other fenliu package).

- ``worker``: a SIP worker process (answer or B2BUA seat mode, taps, transfers, DTMF, prompts,
  registration, allow-list, media timeout);
- ``link``: the supervisor's end of a worker; ``protocol``: what they say to each other;
- ``peer``: a standalone UA used as test/demo hotline, seat and caller (`fenliu dial`);
- ``kamailio``: the generated dispatcher front for a single trunk address;
- ``endpoint`` and ``framecopy``: shared pjsua2 set-up and the fast frame copy.
"""
