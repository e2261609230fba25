"""The SIP side: calls, their legs and what happens to them. May import the ground floor only
(no other fenliu package).

- ``protocol``: what a worker, an ASR process and the supervisor say to each other;
- ``conversation``: one 110 call as a pure state machine (what a hang-up, a failure, early media,
  silence or hold means); ``dialogs``: each leg's SIP dialog, and BYE for a dead worker's legs;
- ``link``: the supervisor's end of a worker process;
- ``ua/``: the pjsua2 processes — the worker, the standalone peer (test/demo hotline, seat,
  caller for `fenliu dial`), the endpoint set-up and the fast frame copy;
- ``front/``: the generated Kamailio dispatcher front for a single trunk address.
"""
