import factory

from api.models import Author, Blog

PASSWORD = "correct horse battery"


class AuthorFactory(factory.django.DjangoModelFactory[Author]):
    class Meta:
        model = Author
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"author{n}")
    bio = factory.Faker("sentence")
    password = factory.django.Password(PASSWORD)


class BlogFactory(factory.django.DjangoModelFactory[Blog]):
    class Meta:
        model = Blog

    author = factory.SubFactory(AuthorFactory)
    title = factory.Faker("sentence", nb_words=4)
    content = factory.Faker("paragraph")
