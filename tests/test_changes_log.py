"""Every write path records one change in the publication log, in order, inside its transaction.

In-process, on the test database: what each path writes to the log and what it queues for after
the commit. tests/test_changes.py proves the same from outside, on real processes.
"""

import asyncio
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core import serializers
from django.core.management import call_command
from django.db import transaction

from api import services
from api.models import Author, Blog
from notifications.models import ChangeKind, Publication
from notifications.publishing.broadcast import HUB_GROUP, publication_from
from notifications.publishing.log import publications_between
from notifications.publishing.signals import BlogFixtureRefused
from tests.factories import AuthorFactory, BlogFactory

pytestmark = pytest.mark.django_db


def log() -> list[tuple[str, int]]:
    return list(Publication.objects.order_by("seq").values_list("kind", "blog_pk"))


def start() -> int:
    return Publication.objects.order_by("seq").values_list("seq", flat=True).last() or 0


def changes_since(seq: int) -> list[tuple[str, int]]:
    return [(p.kind.value, p.blog_id) for p in publications_between(seq)]


def test_an_edit_through_the_service_is_recorded_with_the_text_it_left():
    blog = BlogFactory.create(title="First")
    services.blog_update(author=blog.author, blog_id=blog.pk, title="Second")
    services.blog_update(author=blog.author, blog_id=blog.pk, title="Third")
    assert log() == [("created", blog.pk), ("updated", blog.pk), ("updated", blog.pk)]
    assert [p.blog.title for p in publications_between(0) if p.blog] == ["First", "Second", "Third"]
    seqs = list(Publication.objects.values_list("seq", flat=True))
    assert seqs == list(range(seqs[0], seqs[0] + 3))


def test_model_save_of_an_existing_blog_is_an_edit():
    blog = BlogFactory.create()
    blog.content = "Saved again"
    blog.save()
    assert log() == [("created", blog.pk), ("updated", blog.pk)]
    edited = publications_between(0)[-1].blog
    assert edited is not None and edited.content == "Saved again"


def test_a_deletion_leaves_only_a_tombstone_with_the_author_and_no_text():
    blog = BlogFactory.create(title="Secret title", content="Secret content")
    services.blog_update(author=blog.author, blog_id=blog.pk, content="Still secret")
    other = BlogFactory.create()
    services.blog_delete(author=blog.author, blog_id=blog.pk)
    assert log() == [("created", other.pk), ("deleted", blog.pk)]
    tombstone = Publication.objects.get(kind=ChangeKind.DELETED)
    assert (tombstone.title, tombstone.content, tombstone.published_at, tombstone.blog_id) == ("", "", None, None)
    assert tombstone.author_username == blog.author.username
    replayed = publications_between(0)
    assert "Secret" not in repr(replayed)
    assert replayed[-1].blog is None and replayed[-1].author == blog.author.username
    assert [p.blog_id for p in publications_between(0, author_username=blog.author.username)] == [blog.pk]


def test_model_delete_queryset_delete_and_an_authors_cascade_each_leave_tombstones_in_order():
    alone, first, second = BlogFactory.create(), BlogFactory.create(), BlogFactory.create()
    author = AuthorFactory.create()
    for _ in range(2):
        BlogFactory.create(author=author)
    seq = start()
    # Django's collector deletes in the queryset's order (Blog's default: newest first).
    both = Blog.objects.filter(pk__in=[first.pk, second.pk])
    expected = [
        ("deleted", pk)
        for pk in [alone.pk, *both.values_list("pk", flat=True), *author.blogs.values_list("pk", flat=True)]
    ]
    assert expected[1:3] == [("deleted", second.pk), ("deleted", first.pk)]
    alone.delete()
    both.delete()
    Author.objects.filter(pk=author.pk).delete()
    assert changes_since(seq) == expected
    assert not Publication.objects.exclude(kind=ChangeKind.DELETED).exists()


def test_queryset_update_announces_every_changed_row_once_in_primary_key_order():
    author = AuthorFactory.create()
    blogs = [BlogFactory.create(author=author) for _ in range(3)]
    untouched = BlogFactory.create()
    seq = start()
    assert Blog.objects.filter(author=author).update(title="Renamed") == 3
    assert changes_since(seq) == [("updated", blog.pk) for blog in blogs]
    assert {p.blog.title for p in publications_between(seq) if p.blog} == {"Renamed"}
    assert Blog.objects.filter(pk=untouched.pk).update(title=untouched.title) == 1  # same value: still announced
    assert Blog.objects.filter(pk=untouched.pk).update() == 0  # nothing set: nothing changed
    assert Blog.objects.filter(pk=-1).update(title="x") == 0
    assert changes_since(seq)[3:] == [("updated", untouched.pk)]


def test_queryset_update_through_a_join_and_of_a_slice():
    blog = BlogFactory.create()
    seq = start()
    assert Blog.objects.filter(author__username=blog.author.username).update(content="Joined") == 1
    assert changes_since(seq) == [("updated", blog.pk)]
    with pytest.raises(TypeError, match="slice"):
        Blog.objects.all()[:1].update(title="x")


def test_bulk_update_announces_every_row_once_in_the_order_given():
    blogs = [BlogFactory.create() for _ in range(3)]
    seq = start()
    for index, blog in enumerate(blogs):
        blog.title = f"Bulk {index}"
    reordered = [blogs[2], blogs[0], blogs[1]]
    assert Blog.objects.bulk_update(reordered, ["title"], batch_size=2) == 3
    assert changes_since(seq) == [("updated", blog.pk) for blog in reordered]
    assert [p.blog.title for p in publications_between(seq) if p.blog] == ["Bulk 2", "Bulk 0", "Bulk 1"]


def test_each_change_queues_one_broadcast_for_after_the_commit(django_capture_on_commit_callbacks):
    blog = BlogFactory.create()
    with django_capture_on_commit_callbacks() as callbacks, transaction.atomic():
        blog.title = "Edited"
        blog.save()
        Blog.objects.filter(pk=blog.pk).update(content="Updated")
        blog.delete()
    assert len(callbacks) == 3


def test_a_rolled_back_change_leaves_nothing_and_queues_nothing(django_capture_on_commit_callbacks):
    blog = BlogFactory.create(title="Kept")
    pk, seq = blog.pk, start()
    with django_capture_on_commit_callbacks() as callbacks, pytest.raises(RuntimeError), transaction.atomic():
        services.blog_update(author=blog.author, blog_id=blog.pk, title="Rolled back")
        Blog.objects.filter(pk=blog.pk).update(content="Rolled back")
        Blog.objects.bulk_update([blog], ["title"])
        blog.delete()
        raise RuntimeError("abort")
    assert callbacks == []
    assert changes_since(seq) == []
    assert Blog.objects.get(pk=pk).title == "Kept"


def test_a_fixture_that_would_overwrite_a_blog_is_refused(tmp_path):
    blog = BlogFactory.create()
    blog.title = "From a fixture"
    fixture = tmp_path / "blogs.json"
    fixture.write_text(serializers.serialize("json", [blog]))
    with pytest.raises(BlogFixtureRefused):
        call_command("loaddata", str(fixture), verbosity=0)
    assert Blog.objects.get(pk=blog.pk).title != "From a fixture"


def hub_messages(layer: Any, channel: str) -> list[dict[str, Any]]:
    messages = []
    while True:
        try:
            messages.append(async_to_sync(asyncio.wait_for)(layer.receive(channel), 0.05))
        except TimeoutError:
            return messages


def test_a_blog_deleted_in_the_transaction_that_wrote_it_has_none_of_its_text_broadcast(
    django_capture_on_commit_callbacks,
):
    """The in-memory channel layer the hubs listen on (tests run without Redis): what is sent after the commit."""
    layer = get_channel_layer()
    assert layer is not None
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(HUB_GROUP, channel)
    kept = BlogFactory.create(title="Kept")
    hub_messages(layer, channel)
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        doomed = Blog.objects.create(author=kept.author, title="Secret", content="Secret text")
        doomed.title = "Secret, edited"
        doomed.save()
        kept.title = "Kept, edited"
        kept.save()
        doomed.delete()
    sent = [publication_from(message) for message in hub_messages(layer, channel)]
    assert "Secret" not in repr(sent)
    assert [(p.kind.value, p.blog.title if p.blog else None) for p in sent if p] == [
        ("updated", "Kept, edited"),
        ("deleted", None),
    ]
