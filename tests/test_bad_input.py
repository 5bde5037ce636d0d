"""Hostile or absurd input gets a clear 4xx and changes nothing: never a 500."""

import pytest
import sqlalchemy as sa

from billvend.platform.extensions import db
from billvend.funding.models import Funding
from billvend.vending.models import Payment
from tests.conftest import KEY_RE, form_tokens
from tests.helpers import make_payment, make_user


@pytest.fixture
def customer(client, auth, fund):
    auth.signup()
    fund("5000")


@pytest.mark.parametrize("path", [
    "/history?page=100000000000000000000", "/history?page=-3", "/history?page=abc",
])
def test_absurd_history_pages(client, customer, path):
    assert client.get(path).status_code == 200


@pytest.mark.parametrize("reference", ["%00abc", "x" * 500, "202611220000ABCDEF123456", "..%2f..%2fetc"])
def test_malformed_payment_references_are_404(client, customer, reference):
    for suffix in ("", "/status", "/receipt"):
        assert client.get(f"/payments/{reference}{suffix}").status_code == 404


@pytest.mark.parametrize("key", ["k" * 64 + "\n", "k" * 65, "short", "ключ" * 5, "k" * 20 + "\x00"])
def test_bad_idempotency_keys_are_refused(client, customer, key):
    tokens = form_tokens(client, "/wallet/fund")
    response = client.post("/wallet/fund", data={"csrf_token": tokens["csrf_token"],
                                                 "idempotency_key": key, "amount": "100"})
    assert response.status_code == 422 and b"This form has expired" in response.data
    fresh = KEY_RE.search(response.get_data(as_text=True)).group(1)
    assert fresh != key and len(fresh) >= 16  # the next submit is a new request
    assert db.session.scalar(sa.select(sa.func.count(Funding.id))) == 1
    tokens = form_tokens(client, "/bills/electricity")
    response = client.post("/bills/electricity", data={
        "csrf_token": tokens["csrf_token"], "idempotency_key": key, "disco": "ikeja-electric",
        "meter_type": "prepaid", "meter_number": "1111111111111", "amount": "1000",
        "phone": "08031234567"})
    assert response.status_code == 422
    assert db.session.scalar(sa.select(sa.func.count(Payment.id))) == 0


@pytest.mark.parametrize("amount", ["1" * 40, "9" * 13, "1e400", "Infinity", "NaN", "١٠٠٠"])
def test_huge_and_exotic_amounts(client, customer, pay, fund, amount):
    assert fund(amount).status_code == 422
    assert pay(amount=amount).status_code == 422
    assert db.session.scalar(sa.select(sa.func.count(Payment.id))) == 0


def test_nul_bytes_in_fields(client, customer, pay):
    response = pay(meter_number="11111\x0011111", phone="0803\x001234567")
    assert response.status_code == 422
    assert db.session.scalar(sa.select(sa.func.count(Payment.id))) == 0


# --- Numeric query parameters on the customer's lists (issue 21, item 2) ----------

from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tests.test_admin import query_values  # noqa: E402

#: Every customer list and the query parameters it reads.
CUSTOMER_LISTS = {
    "/history": ("page", "q", "kind", "status", "date_from", "date_to"),
    "/history/statement.csv": ("q", "kind", "status", "date_from", "date_to"),
    "/wallet/fundings": ("page", "before"),
    "/meters": ("page",),
    "/bills/electricity": ("meter", "disco", "meter_type"),
}


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.dictionaries(st.sampled_from(sorted({n for ns in CUSTOMER_LISTS.values() for n in ns})),
                              query_values, max_size=4))
@example(values={"page": "\u00b2", "meter": "\u2460"})
@example(values={"page": "\u0663", "meter": "\u0663"})
def test_no_query_parameter_on_any_customer_list_answers_500(client, customer, values):
    for path, names in CUSTOMER_LISTS.items():
        query = {name: value for name, value in values.items() if name in names}
        response = client.get(path, query_string=query)
        assert response.status_code < 500, (path, query, response.status_code)
        response.close()


def test_a_meter_given_in_another_scripts_digits_is_not_read_as_a_number(client, customer):
    # int() reads "\u0661" (Arabic-Indic one) as 1; a URL's ids are ASCII digits.
    response = client.get("/bills/electricity?meter=%D9%A1")
    assert response.status_code == 200


def test_a_superscript_quick_amount_is_refused_not_a_500(client, customer):
    tokens = form_tokens(client, "/bills/electricity")
    response = client.post("/bills/electricity", data=tokens | {
        "disco": "ikeja-electric", "meter_type": "prepaid", "meter_number": "1111111111111",
        "amount": "", "quick_amount": "\u00b2", "phone": "08031234567"})
    assert response.status_code == 422
    assert db.session.scalar(sa.select(sa.func.count(Payment.id))) == 0


# --- Names with control characters -------------------------------------------------------------


def _saved_meter(user):
    from billvend.vending import journey

    payment = make_payment(user)
    journey.save_meter(payment.id)
    db.session.commit()
    from billvend.vending.models import SavedMeter

    return db.session.scalar(sa.select(SavedMeter).where(SavedMeter.user_id == user.id))


@pytest.mark.parametrize("name", ["Ada\x00Obi", "Ada\x1b[31mObi", "Ada\u202eObi"])
def test_names_with_control_characters_get_the_form_again(client, auth, name):
    """A NUL in a full name or a meter nickname was a 400 error page on
    PostgreSQL (the form and its other fields lost) and was stored as is on
    SQLite, then drawn into statements and receipts; terminal escapes and
    bidirectional overrides (which make "Ada Obi" display reversed) were
    stored on both. Now each is a form error, and nothing changes."""
    from billvend.accounts.models import User

    password = "violet tractor window 42"
    signup = client.post("/signup", data={"email": "obi@example.com", "password": password,
                                          "confirm_password": password, "full_name": name,
                                          "csrf_token": auth.csrf("/signup")})
    assert signup.status_code == 422
    assert db.session.scalar(sa.select(sa.func.count(User.id))) == 0

    user = make_user("ada@example.com", balance_kobo=500_000)
    auth.login()
    profile = client.post("/account", data={"full_name": name, "phone": "",
                                            "csrf_token": auth.csrf("/account")})
    prompt = client.post("/profile-prompt", data={"full_name": name, "phone": "08031234567",
                                                  "csrf_token": auth.csrf("/account")})
    meter = _saved_meter(user)
    rename = client.post(f"/meters/{meter.id}/rename", data={
        "nickname": name, "csrf_token": auth.csrf(f"/meters/{meter.id}/rename")})
    assert (profile.status_code, prompt.status_code, rename.status_code) == (422, 422, 422)
    assert "Use letters, numbers, spaces and punctuation only." in profile.get_data(as_text=True)
    db.session.expire_all()
    stored = db.session.get(User, user.id)
    assert stored.full_name is None and stored.phone is None
    assert db.session.get(type(meter), meter.id).nickname is None


def test_ordinary_names_with_accents_and_apostrophes_are_kept(client, auth):
    """Guard: real names (accents, apostrophes, hyphens, emoji) still save."""
    from billvend.accounts.models import User

    user = make_user("ada@example.com")
    auth.login()
    name = "Adaọbị O'Neil-Ṣàngó 😀"
    response = client.post("/account", data={"full_name": name, "phone": "",
                                             "csrf_token": auth.csrf("/account")})
    assert response.status_code == 303
    db.session.expire_all()
    assert db.session.get(User, user.id).full_name == name
