import pytest
from tests.conftest import CSRF_RE
from tests.helpers import make_user
from billvend.platform.extensions import db


def csrf(client, path):
    m = CSRF_RE.search(client.get(path).get_data(as_text=True))
    return m.group(1) or m.group(2)


@pytest.mark.parametrize("path", ["/reset-password/%00", "/reset-password/" + "a" * 10000,
                                  "/reset-password/%ff%fe", "/verify-email/%00aaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                                  "/verify-email/" + "A" * 43, "/reset-password/" + "A" * 43,
                                  "/verify-email/%C3%A9" * 10])
def test_bad_tokens(client, path):
    r = client.get(path)
    assert r.status_code in (400, 404, 410), r.status_code
    r = client.post(path, data={"password": "x"})
    assert r.status_code in (400, 404, 405, 410), r.status_code


@pytest.mark.parametrize("email", ["ada\x00@example.com", "a" * 100000 + "@x.com", "\udcff@x.com",
                                   "ＡＤＡ@example.com", " ada@example.com ", "ada@exam\u200bple.com"])
def test_forgot_bad(client, email, monkeypatch):
    from billvend.web.auth import recovery
    monkeypatch.setattr(recovery, "FORGOT_FLOOR_SECONDS", 0.0)
    make_user("ada@example.com")
    try:
        r = client.post("/forgot-password", data={"email": email, "csrf_token": csrf(client, "/forgot-password")})
    except UnicodeEncodeError:
        return
    print(email[:20], r.status_code)
    assert r.status_code in (200, 413, 422)


def test_forgot_raw_bytes(client):
    r = client.post("/forgot-password", data=b"email=%ff%fe&csrf_token=x",
                    content_type="application/x-www-form-urlencoded")
    assert r.status_code in (400, 422), r.status_code


def test_csrf_missing(client, auth):
    make_user("ada@example.com")
    auth.login()
    for path, data in [("/account/email", {"email": "x@y.com", "current_password": "correct horse 1"}),
                       ("/account/email/resend", {}), ("/account/phone/code", {}),
                       ("/account/phone", {"code": "123456"}), ("/account/confirm", {"password": "correct horse 1"})]:
        r = client.post(path, data=data)
        print(path, r.status_code, r.headers.get("Location"))


@pytest.mark.parametrize("nxt", ["//evil.com", "/\\evil.com", "https://evil.com", "/%2F%2Fevil.com",
                                 "/\t/evil.com", "\\/evil.com", "/.%2e/evil", "%2F%2Fevil.com", "/ /evil.com"])
def test_next(client, auth, nxt):
    make_user("ada@example.com")
    auth.login()
    r = client.post("/account/confirm?next=" + nxt, data={"password": "correct horse 1",
                                                         "csrf_token": csrf(client, "/account/confirm")})
    print(repr(nxt), r.status_code, r.headers.get("Location"))


def test_phone_code_bad(client, auth):
    u = make_user("ada@example.com")
    u.phone = "+2348031234567"
    db.session.commit()
    auth.login()
    for code in ["\x00" * 6, "１２３４５６", "٠١٢٣٤٥", "1" * 100000, "12345\n"]:
        r = client.post("/account/phone", data={"code": code, "csrf_token": csrf(client, "/account/phone")})
        print(repr(code[:8]), r.status_code)
        assert r.status_code in (413, 422)


def test_email_change_bad(client, auth):
    make_user("ada@example.com")
    auth.login()
    for email in ["x\x00@y.com", "ada@example.com ", "ADA@EXAMPLE.COM", "ａｄａ@example.com"]:
        r = client.post("/account/email", data={"email": email, "current_password": "correct horse 1",
                                                "csrf_token": csrf(client, "/account/email")})
        print(repr(email), r.status_code)
        assert r.status_code in (303, 422)
