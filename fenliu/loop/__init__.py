"""Closing the loop (闭环): the outbox to hotline platforms and the SMS gateway, the follow-through
(repeat callers, flow-back, alerts), statistics and reports. May import the ground floor and
the domain packages (chiefly ``store`` and ``hotlines``)."""
