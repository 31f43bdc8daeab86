"""mailbox_validate: every reference checked, and an answer within a bound whatever comes in.

Issue 8 defect 4: a create request without a usable domain and without a password hung
for ever, because the password was generated for an address that did not exist. Each
test here has a short timeout (pytest-timeout interrupts the loop) so that a hang fails.
"""

from __future__ import annotations

import pytest

from mailplane.core.errors import ValidationFailed
from mailplane.mailboxes.services import mailbox_validate
from tests.support.fixtures import verified_domain

pytestmark = pytest.mark.timeout(10)


def _problems(account, data) -> dict[str, list[str]]:
    with pytest.raises(ValidationFailed) as caught:
        mailbox_validate(organization=account.org, data=data)
    return caught.value.details


@pytest.mark.parametrize(
    "data",
    [
        {"email": "abc"},
        {"email": "abc", "domain": None},
        {"email": "abc", "domain": ""},
        {"email": "abcdef", "domain": 424242},
        {"email": "abcdef", "domain": "9223372036854775808"},
        {"email": "abcdef", "domain": 2**70},
        {"email": "abcdef", "domain": True},
        {"email": "abcdef", "domain": "²"},
        {"email": "abcdef", "domain": [1]},
        {"email": "abcdef", "domain": {"id": 1}},
    ],
)
def test_no_usable_domain_is_a_prompt_400_on_domain(account, data):
    assert "domain" in _problems(account, data)


def test_another_accounts_domain_is_not_found_and_answers_at_once(account, other_account):
    theirs = verified_domain(other_account, name="theirs.test")
    problems = _problems(account, {"email": "abcdef", "domain": theirs.pk})
    assert problems["domain"] == [f"domain {theirs.pk} not found"]


@pytest.mark.parametrize("name", ["relay_server", "project"])
@pytest.mark.parametrize("value", ["9223372036854775808", 2**64, -1, 0, "1e3", " ", "\u0661"])
def test_out_of_range_or_non_ascii_ids_name_the_field(account, name, value):
    domain = verified_domain(account)
    problems = _problems(account, {"email": "abcdef", "domain": domain.pk, name: value})
    assert list(problems) == [name], problems


def test_generated_password_is_made_for_the_real_address(account):
    domain = verified_domain(account)
    spec = mailbox_validate(organization=account.org, data={"email": "abc", "domain": domain.pk})
    assert "abc" not in spec.password.lower()
    assert spec.password[0].isalpha()


@pytest.mark.parametrize("name", ["first_name", "last_name"])
def test_nul_in_text_is_refused(account, name):
    domain = verified_domain(account)
    problems = _problems(account, {"email": "abcdef", "domain": domain.pk, name: "a\x00b"})
    assert "NUL" in problems[name][0]


def test_chosen_password_starting_like_a_formula_is_refused(account):
    domain = verified_domain(account)
    problems = _problems(
        account, {"email": "abcdef", "domain": domain.pk, "password": "=SecurePassword123"}
    )
    assert problems == {
        "password": ["must not start with = + - or @ (a spreadsheet would read it as a formula)"]
    }
