"""Edits and deletions join creations in the publication log; each entry keeps the text it announced."""

import django.db.models.deletion
from django.db import migrations, models
from django.db.models import OuterRef, Subquery


def fill_snapshots(apps, schema_editor):
    Blog = apps.get_model("api", "Blog")
    Publication = apps.get_model("notifications", "Publication")
    blog = Blog.objects.filter(pk=OuterRef("blog_id"))
    Publication.objects.update(
        blog_pk=models.F("blog_id"),
        title=Subquery(blog.values("title")[:1]),
        content=Subquery(blog.values("content")[:1]),
        published_at=Subquery(blog.values("published_at")[:1]),
    )


class Migration(migrations.Migration):
    dependencies = [
        ("api", "0001_initial"),
        ("notifications", "0002_counter_row"),
    ]

    operations = [
        migrations.AddField(
            model_name="publication",
            name="kind",
            field=models.CharField(
                choices=[("created", "Created"), ("updated", "Updated"), ("deleted", "Deleted")],
                default="created",
                max_length=7,
            ),
        ),
        migrations.AddField(
            model_name="publication",
            name="blog_pk",
            field=models.BigIntegerField(db_index=True, default=0, help_text="The blog's id, kept on its tombstone."),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="publication",
            name="title",
            field=models.CharField(blank=True, default="", max_length=200),
        ),
        migrations.AddField(
            model_name="publication",
            name="content",
            field=models.TextField(blank=True, default=""),
        ),
        migrations.AddField(
            model_name="publication",
            name="published_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AlterField(
            model_name="publication",
            name="blog",
            field=models.ForeignKey(
                null=True,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="publications",
                to="api.blog",
            ),
        ),
        migrations.RunPython(fill_snapshots, migrations.RunPython.noop),
    ]
