"""Secret rules: hypothesis-made tokens of every kind are found and redacted; values never shown."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parallelize.inputs.secrets import PLACEHOLDERS, RULES, find_secrets, is_config_path, scan

ALNUM = string.ascii_letters + string.digits
URLSAFE = ALNUM + "_-"
BASE32 = string.ascii_uppercase + "234567"
BASE64 = ALNUM + "+/"


def chars(alphabet: str, low: int, high: int | None = None) -> st.SearchStrategy[str]:
    return st.text(alphabet=alphabet, min_size=low, max_size=high or low)


def joined(*parts: st.SearchStrategy[str] | str) -> st.SearchStrategy[str]:
    return st.tuples(*(st.just(p) if isinstance(p, str) else p for p in parts)).map("".join)


def pem(label: str, body: str) -> str:
    lines = "\n".join(body[i : i + 64] for i in range(0, len(body), 64))
    return f"-----BEGIN {label}-----\n{lines}\n-----END {label}-----"


# Each rule: a strategy for (text to plant, the secret value that must never be sent), built from
# the token format the rule names, not from the rule's own regex.
PRIVATE_KEY = st.builds(
    lambda label, body: (pem(label, body),) * 2,
    st.sampled_from(
        [
            "PRIVATE KEY",
            "RSA PRIVATE KEY",
            "EC PRIVATE KEY",
            "ENCRYPTED PRIVATE KEY",
            "OPENSSH PRIVATE KEY",
            "PGP PRIVATE KEY BLOCK",
        ]
    ),
    chars(BASE64, 40, 400),
)
AWS_SECRET = st.builds(
    lambda name, sep, value: (f"{name}{sep}{value}", value),
    st.sampled_from(["aws_secret_access_key", "AWS_SECRET_ACCESS_KEY", '"SecretAccessKey"']),
    st.sampled_from([" = ", "=", ": "]),
    chars(BASE64, 40),
)


def real(value: str) -> bool:
    """Not a placeholder (`changeme`, `$DB_PASSWORD`) nor filler (`aaaa`): a secret's look."""
    return (
        value.lower() not in PLACEHOLDERS
        and len(set(value.lower())) > 2
        and not value.startswith("$")  # `$NAME` refers to a variable holding the secret
    )


URL_PASSWORD = st.builds(
    lambda scheme, user, password: (f"{scheme}://{user}:{password}@db.example.com/app", password),
    st.sampled_from(["postgres", "mysql", "https", "redis"]),
    st.sampled_from(["app", "admin", "deploy"]),
    chars(ALNUM + "!$%^*", 8, 24).filter(real),
)
ASSIGNMENT = st.builds(
    lambda key, sep, quote, value: (f"{key}{sep}{quote}{value}{quote}", value),
    st.sampled_from(["password", "DB_PASSWORD", "api_key", "client_secret", "auth.token"]),
    st.sampled_from([" = ", "=", ": "]),
    st.sampled_from(["", '"', "'"]),
    chars(ALNUM + "!#%&*+", 8, 30).filter(real),
)


def token(strategy: st.SearchStrategy[str]) -> st.SearchStrategy[tuple[str, str]]:
    return strategy.map(lambda t: (t, t))


TOKENS: dict[str, st.SearchStrategy[tuple[str, str]]] = {
    "private-key": PRIVATE_KEY,
    "aws-access-key-id": token(joined(st.sampled_from(["AKIA", "ASIA"]), chars(BASE32, 16))),
    "aws-secret-access-key": AWS_SECRET,
    "github-token": token(joined("gh", st.sampled_from("pousr"), "_", chars(ALNUM, 36))),
    "github-fine-grained-token": token(
        joined("github_pat_", chars(ALNUM, 22), "_", chars(ALNUM, 59))
    ),
    "gitlab-token": token(joined(st.sampled_from(["glpat-", "gldt-"]), chars(URLSAFE, 20, 40))),
    "slack-token": token(
        joined(
            "xox",
            st.sampled_from("bpa"),
            "-",
            chars(string.digits, 10, 13),
            "-",
            chars(string.digits, 10, 13),
            "-",
            chars(ALNUM, 24, 32),
        )
    ),
    "slack-webhook": joined(
        "hooks.slack.com/services/T",
        chars(BASE32, 8, 10),
        "/B",
        chars(BASE32, 8, 10),
        "/",
        chars(ALNUM, 24),
    ).map(lambda url: (f"https://{url}", url)),
    "openai-api-key": token(
        st.one_of(
            joined("sk-proj-", chars(URLSAFE, 40, 160)),
            joined("sk-", chars(ALNUM, 20), "T3BlbkFJ", chars(ALNUM, 20)),
            joined("sk-ant-api03-", chars(URLSAFE, 80, 100)),
        )
    ),
    "google-api-key": token(joined("AIza", chars(URLSAFE, 35))),
    "stripe-key": token(
        joined(st.sampled_from(["sk_live_", "rk_live_", "sk_test_"]), chars(ALNUM, 24, 99))
    ),
    "huggingface-token": token(joined("hf_", chars(ALNUM, 34))),
    "npm-token": token(joined("npm_", chars(ALNUM, 36))),
    "pypi-token": token(joined("pypi-AgEIcHlwaS5vcmc", chars(URLSAFE, 50, 120))),
    "url-password": URL_PASSWORD,
    "password-assignment": ASSIGNMENT,
}

#: Text around a planted token: no letters or digits, so it can never spell the secret itself.
FILLER = st.text(alphabet=" .,;()[]\n-", max_size=80)


def test_every_rule_has_a_token_generator() -> None:
    assert set(TOKENS) == {rule.name for rule in RULES}


@pytest.mark.parametrize("rule", sorted(TOKENS))
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_planted_tokens_are_found_and_redacted(rule: str, data: st.DataObject) -> None:
    planted, value = data.draw(TOKENS[rule])
    before, after = data.draw(FILLER), data.draw(FILLER)
    text = f"{before}\n{planted}\n{after}"
    safe, findings = scan("deploy/settings.env", text)
    assert value not in safe
    assert f"[REDACTED:{rule}]" in safe
    assert safe.count("\n") == text.count("\n")  # line numbers of the rest do not move
    assert [f.rule for f in findings] == [rule]
    found = findings[0]
    assert found.line == before.count("\n") + 2
    assert found.length >= len(value) and value not in found.masked()
    assert found.masked().startswith(f"deploy/settings.env:{found.line}:{rule} (")


BENIGN = [
    "max_tokens: 2048",
    "chunk_tokens = 12000",
    "password = os.environ['DB_PASSWORD']",
    'password: "${DB_PASSWORD}"',
    "token: <your-token-here>",
    "secret = changeme",
    "api_key: xxxxxxxxxxxx",
    "from sklearn import svm  # sk-learn",
    "task-0123456789abcdefghijABCDEFGHIJ0123456789",
    "see https://user@example.com/docs and http://example.com:8080/x",
    "AKIA is a prefix; AKIA1234 is too short",
    "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8A\n-----END PUBLIC KEY-----",
    "if line.startswith('-----BEGIN RSA PRIVATE KEY-----'):",
    "ghp_short",
]


@pytest.mark.parametrize("line", BENIGN)
def test_ordinary_code_and_config_are_left_alone(line: str) -> None:
    assert find_secrets(line, config=True) == []


def test_assignments_count_in_config_files_and_stdin_only() -> None:
    line = 'password = "hunter2hunter2"\n'
    assert scan("app/settings.py", line) == (line, [])
    for path in (".env", "config/app.yaml", "app.ini", "pyproject.toml", "<stdin>"):
        assert is_config_path(path), path
        safe, findings = scan(path, line)
        assert "hunter2" not in safe and findings[0].rule == "password-assignment"
