"""The live page: what a newcomer opens first after `make run`."""

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.csrf import ensure_csrf_cookie

LATEST_BLOGS_SHOWN = 20


@ensure_csrf_cookie  # the page's script sends it back, as GraphQL requires with a session cookie
def live_page(request: HttpRequest) -> HttpResponse:
    """The latest blogs, with new ones pushed in over the websocket (pages/static/pages/live.js)."""
    author = request.GET.get("author") or None
    config = {
        "graphqlPath": reverse("graphql"),
        "subscriptionPath": settings.GRAPHENE.get("SUBSCRIPTION_PATH") or reverse("graphql"),
        "first": LATEST_BLOGS_SHOWN,
        "author": author,
    }
    return render(request, "pages/live.html", {"config": config, "author": author})
