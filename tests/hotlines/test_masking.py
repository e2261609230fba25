"""The one masker (fenliu.hotlines.masking): every form a caller's number comes in."""

from __future__ import annotations

import pytest

from fenliu.hotlines.masking import mask_number


@pytest.mark.parametrize(("given", "shown"), [
    ("13812341234", "138****1234"),
    ("+86 138-1234-1234", "+86 138-****-1234"),
    ("008613812341234", "0086138****1234"),
    ("<tel:13812341234>", "<tel:138****1234>"),
    ("tel:+86-138-1234-1234;phone-context=example.cn", "tel:+86-138-****-1234;phone-context=example.cn"),
    ("<sip:13812345678@10.0.0.1:5060>", "<sip:138****5678@10.0.0.1:5060>"),  # host and port are not the caller's
    ("<sips:+8613812341234@carrier.example;user=phone>", "<sips:+86138****1234@carrier.example;user=phone>"),
    ('"13812341234" <sip:13812341234@pbx:5060>', '"138****1234" <sip:138****1234@pbx:5060>'),
    ('"张三 138 1234 1234" <sip:anonymous@pbx>', '"张三 138 **** 1234" <sip:anonymous@pbx>'),  # in the display name
    ("0551-62881234", "055*-****1234"),
    ("6288123", "6****23"),  # a short number keeps less
    ("sip:10.0.0.5:5060", "sip:10.0.0.5:5060"),  # no user part: nothing of a caller's
    ("110", "110"), ("", ""),
])
def test_every_number_form_is_masked_and_hosts_are_not(given, shown):
    assert mask_number(given) == shown


def test_no_digit_of_the_middle_survives():
    for given in ("13812341234", "tel:+86-138-1234-1234", '"138 1234 1234" <sip:13812341234@1.2.3.4>'):
        assert "1234 1234" not in mask_number(given) and "812341" not in mask_number(given).replace("-", "")
