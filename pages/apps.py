from django.apps import AppConfig


class PagesConfig(AppConfig):
    """The pages people open in a browser: the live page at / and GraphiQL's offline assets."""

    name = "pages"

    def ready(self) -> None:
        from pages import checks  # noqa: F401  (registers the system check)
