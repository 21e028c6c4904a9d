from django.db import models


class Author(models.Model):
    username = models.CharField(max_length=150, unique=True)
    bio = models.TextField(blank=True)


class Blog(models.Model):
    author = models.ForeignKey(Author, on_delete=models.CASCADE, related_name="blogs")
    title = models.CharField(max_length=200)
    content = models.TextField()
    published_at = models.DateTimeField(auto_now_add=True)
