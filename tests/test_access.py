"""Tokens expire, clients sign out, and every way access ends is announced (api/access.py).

In-process: the database and the GraphQL view. That the announcements close open sockets on
every instance is tests/test_revocation.py's, on real processes.
"""

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from api import selectors, services
from api.models import ApiToken, Author
from api.signals import DEACTIVATED, DELETED, EXPIRED, REVOKED, SIGNED_OUT, AccessEnded, access_ended
from tests.factories import AuthorFactory
from tests.graphql_http import post_graphql
from tests.live import CREATE_BLOG, assert_no_errors, error_codes

pytestmark = pytest.mark.django_db

VIEWER = "query { viewer { username } }"
SIGN_OUT = "mutation { signOut(input: {}) { signedOut } }"
SIGN_OUT_EVERYWHERE = "mutation { signOutEverywhere(input: {}) { revokedTokens } }"


@pytest.fixture
def announced():
    """Every AccessEnded sent while the test runs."""
    seen: list[AccessEnded] = []

    def record(sender, ended, **kwargs):
        seen.append(ended)

    access_ended.connect(record, dispatch_uid="test_access_record")
    yield seen
    access_ended.disconnect(dispatch_uid="test_access_record")


def test_a_token_expires_after_the_configured_ttl(settings):
    settings.API_TOKEN_TTL_SECONDS = 120
    before = timezone.now()
    issued = services.token_create(author=AuthorFactory.create())
    assert before + timedelta(seconds=120) <= issued.expires_at <= timezone.now() + timedelta(seconds=120)
    assert ApiToken.objects.get().expires_at == issued.expires_at


def test_sign_up_and_log_in_return_the_expiry(client, settings):
    settings.API_TOKEN_TTL_SECONDS = 3600
    data = assert_no_errors(
        post_graphql(
            client,
            'mutation { createAuthor(input: {username: "exp", password: "long enough"}) { token expiresAt } }',
        )
    )
    token = ApiToken.objects.get()
    assert data["createAuthor"]["expiresAt"] == token.expires_at.isoformat()
    data = assert_no_errors(
        post_graphql(
            client, 'mutation { createToken(input: {username: "exp", password: "long enough"}) { token expiresAt } }'
        )
    )
    assert data["createToken"]["expiresAt"] == ApiToken.objects.order_by("-pk")[0].expires_at.isoformat()


def test_an_expired_token_is_unauthenticated_over_http_and_says_why(client):
    author = AuthorFactory.create()
    raw = services.token_create(author=author).raw
    token = ApiToken.objects.get()
    token.expires_at = timezone.now() - timedelta(seconds=1)
    token.save()
    assert selectors.credential_by_token(raw) == EXPIRED
    result = post_graphql(client, CREATE_BLOG, {"title": "t", "content": "c"}, raw)
    assert error_codes(result) == ["UNAUTHENTICATED"]
    assert "expired" in result["errors"][0]["message"]
    assert assert_no_errors(post_graphql(client, VIEWER, token=raw))["viewer"] is None


def test_sign_out_revokes_only_the_token_it_is_sent_with(client, announced):
    author = AuthorFactory.create()
    first, second = services.token_create(author=author).raw, services.token_create(author=author).raw
    assert assert_no_errors(post_graphql(client, SIGN_OUT, token=first)) == {"signOut": {"signedOut": True}}
    assert selectors.credential_by_token(first) == REVOKED
    assert assert_no_errors(post_graphql(client, VIEWER, token=second))["viewer"]["username"] == author.username
    token_id = ApiToken.objects.get(revoked=True).pk
    assert announced == [AccessEnded(SIGNED_OUT, token_ids=(token_id,))]
    assert error_codes(post_graphql(client, SIGN_OUT, token=first)) == ["UNAUTHENTICATED"]
    assert error_codes(post_graphql(client, SIGN_OUT)) == ["UNAUTHENTICATED"]


def test_sign_out_everywhere_revokes_every_token_of_the_author(client, announced):
    author, other = AuthorFactory.create(), AuthorFactory.create()
    tokens = [services.token_create(author=author).raw for _ in range(3)]
    others = services.token_create(author=other).raw
    result = assert_no_errors(post_graphql(client, SIGN_OUT_EVERYWHERE, token=tokens[0]))
    assert result == {"signOutEverywhere": {"revokedTokens": 3}}
    assert all(selectors.credential_by_token(raw) == REVOKED for raw in tokens)
    assert selectors.author_by_token(others) == other
    assert announced[-1] == AccessEnded(SIGNED_OUT, author_ids=(author.pk,))
    assert sorted(announced[0].token_ids) == sorted(ApiToken.objects.filter(author=author).values_list("pk", flat=True))


def test_revoking_through_the_queryset_announces_the_tokens(announced):
    author = AuthorFactory.create()
    services.token_create(author=author)
    services.token_create(author=author)
    ids = tuple(ApiToken.objects.values_list("pk", flat=True))
    ApiToken.objects.filter(author=author).update(revoked=True)
    assert [(ended.reason, sorted(ended.token_ids)) for ended in announced] == [(REVOKED, sorted(ids))]


def test_the_token_queryset_refuses_updates_that_would_leave_connections_on_old_terms():
    services.token_create(author=AuthorFactory.create())
    with pytest.raises(ValueError, match="Revoke the tokens"):
        ApiToken.objects.update(expires_at=timezone.now() + timedelta(days=365))
    with pytest.raises(ValueError, match="author"):
        ApiToken.objects.update(author=AuthorFactory.create())


def test_saving_or_deleting_a_token_announces_it(announced):
    services.token_create(author=AuthorFactory.create())
    token = ApiToken.objects.get()
    token.save()
    ApiToken.objects.update(last_used_at=timezone.now())  # an update that ends nothing announces nothing
    assert announced == []
    token.revoked = True
    token.save()
    assert announced == [AccessEnded(REVOKED, token_ids=(token.pk,))]
    services.token_create(author=token.author)
    other = ApiToken.objects.get(revoked=False)
    ApiToken.objects.filter(pk=other.pk).delete()
    assert announced[-1] == AccessEnded(REVOKED, token_ids=(other.pk,))


def test_deactivating_an_author_announces_it_however_it_is_done(announced):
    author, second = AuthorFactory.create(), AuthorFactory.create()
    author.is_active = False
    author.save()
    assert announced == [AccessEnded(DEACTIVATED, author_ids=(author.pk,))]
    Author.objects.filter(pk=second.pk).update(is_active=False)
    assert announced[-1] == AccessEnded(DEACTIVATED, author_ids=(second.pk,))
    assert get_user_model().objects.filter(is_active=False).count() == 2


def test_deleting_an_author_announces_it_once_as_deleted(announced):
    author = AuthorFactory.create()
    services.token_create(author=author)
    pk = author.pk
    author.delete()
    assert announced == [AccessEnded(DELETED, author_ids=(pk,))]


def test_a_token_of_a_deactivated_author_does_not_sign_in():
    author = AuthorFactory.create()
    raw = services.token_create(author=author).raw
    Author.objects.filter(pk=author.pk).update(is_active=False)
    assert selectors.credential_by_token(raw) == DEACTIVATED


def test_credential_problem_reads_the_current_state():
    author = AuthorFactory.create()
    credential = selectors.credential_by_token(services.token_create(author=author).raw)
    assert isinstance(credential, selectors.Credential)
    assert selectors.credential_problem(credential) is None
    token = ApiToken.objects.get(author=author)
    token.expires_at = timezone.now()
    token.save()
    assert selectors.credential_problem(credential) == EXPIRED
    session_credential = selectors.Credential(author, session_key="no-such-session")
    assert selectors.credential_problem(session_credential) == SIGNED_OUT
    Author.objects.filter(pk=author.pk).update(is_active=False)
    assert selectors.credential_problem(credential) == EXPIRED
    assert selectors.credential_problem(session_credential) == DEACTIVATED


def test_the_admin_revokes_tokens_and_ends_an_authors_access_in_one_action(admin_client, announced):
    author = AuthorFactory.create()
    tokens = [services.token_create(author=author).raw for _ in range(2)]
    response = admin_client.post(
        "/admin/api/author/", {"action": "end_access", "_selected_action": [author.pk]}, follow=True
    )
    assert response.status_code == 200
    assert all(selectors.credential_by_token(raw) == REVOKED for raw in tokens)
    assert announced[-1] == AccessEnded(REVOKED, author_ids=(author.pk,))

    raw = services.token_create(author=author).raw
    token = ApiToken.objects.get(revoked=False)
    assert token.pk is not None
    response = admin_client.post("/admin/api/apitoken/", {"action": "revoke", "_selected_action": [token.pk]})
    assert response.status_code == 302
    assert selectors.credential_by_token(raw) == REVOKED
    assert announced[-1] == AccessEnded(REVOKED, token_ids=(token.pk,))


def test_credential_problems_answers_for_many_in_a_few_queries(django_assert_max_num_queries):
    authors = [AuthorFactory.create() for _ in range(3)]
    credentials = []
    for author in authors:
        credential = selectors.credential_by_token(services.token_create(author=author).raw)
        assert isinstance(credential, selectors.Credential)
        credentials.append(credential)
    ApiToken.objects.filter(author=authors[0]).update(revoked=True)
    Author.objects.filter(pk=authors[1].pk).update(is_active=False)
    gone = selectors.Credential(authors[2], session_key="no-such-session")
    with django_assert_max_num_queries(3):
        problems = selectors.credential_problems([*credentials, gone])
    assert problems == {credentials[0]: REVOKED, credentials[1]: DEACTIVATED, gone: SIGNED_OUT}
    assert all(selectors.credential_problem(credential) == problems.get(credential) for credential in credentials)
