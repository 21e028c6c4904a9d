"""One bearer sign-in (api/auth.sign_in) for HTTP requests, websockets' connection_init and HTTP streams."""

from datetime import timedelta

import pytest
from django.utils import timezone

from api import services
from api.auth import TokenRefused, sign_in
from api.models import ApiToken
from api.signals import EXPIRED, REVOKED
from tests.factories import AuthorFactory

pytestmark = pytest.mark.django_db


def test_a_valid_bearer_token_signs_its_author_in():
    author = AuthorFactory.create()
    raw = services.token_create(author=author).raw
    credential = sign_in(f"Bearer {raw}")
    assert credential is not None and credential.author == author
    assert credential.token_id == ApiToken.objects.get().pk


def test_no_token_signs_nobody_in_and_another_scheme_is_someone_elses():
    assert sign_in(None) is None
    assert sign_in("") is None
    assert sign_in("Basic dXNlcjpwYXNz") is None  # a proxy's, not ours


def test_where_only_a_bearer_token_can_be_meant_anything_else_is_refused():
    for value in ("Basic dXNlcjpwYXNz", "no scheme", 42, ["Bearer x"]):
        with pytest.raises(TokenRefused, match="invalid or has been revoked"):
            sign_in(value, bearer_only=True)


@pytest.mark.parametrize("ending", [EXPIRED, REVOKED])
def test_a_token_that_no_longer_signs_in_is_refused_saying_why(ending):
    raw = services.token_create(author=AuthorFactory.create()).raw
    token = ApiToken.objects.get()
    if ending == EXPIRED:
        token.expires_at = timezone.now() - timedelta(seconds=1)
    else:
        token.revoked = True
    token.save()
    with pytest.raises(TokenRefused) as refused:
        sign_in(f"Bearer {raw}")
    assert refused.value.reason == ending
    assert ("expired" in str(refused.value)) is (ending == EXPIRED)
