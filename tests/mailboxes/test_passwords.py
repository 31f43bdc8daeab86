from mailplane.mailboxes import passwords


def test_seed_example_password_is_accepted():
    assert (
        passwords.password_problems(
            "SecurePassword123!", local_part="john.doe", address="john.doe@yourdomain.com"
        )
        == []
    )


def test_each_rule_is_reported():
    problems = passwords.password_problems("john", local_part="john", address="john@x.test")
    joined = " | ".join(problems)
    for fragment in ("characters long", "upper-case", "digit", "symbol", "mailbox address"):
        assert fragment in joined


def test_generated_passwords_pass_the_rules_and_differ():
    generated = {passwords.password_generate() for _ in range(50)}
    assert len(generated) == 50
    for password in generated:
        assert passwords.password_problems(password, local_part="a", address="a@b.test") == []
        assert "#" not in password


def test_hash_round_trip_and_tamper():
    encoded = passwords.password_hash("SecurePassword123!")
    assert encoded.startswith("scrypt$")
    assert passwords.password_verify("SecurePassword123!", encoded)
    assert not passwords.password_verify("securepassword123!", encoded)
    assert not passwords.password_verify("SecurePassword123!", encoded[:-4] + "AAAA")
    assert not passwords.password_verify("x", "garbage")
