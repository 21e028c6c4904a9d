"""Signals the blog models send beyond Django's own."""

from django.dispatch import Signal

# Sent inside the transaction of Blog.objects.bulk_create, with `blogs`: the created rows in the
# order given. bulk_create sends no post_save, and every new blog must still be announced.
blogs_created = Signal()
