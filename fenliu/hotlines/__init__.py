"""The hotlines calls are diverted to: sites, targets and platforms, order numbers, work-order and
SMS texts (``linkage``), platform signatures (``signing``). Pure; may import the ground floor."""
