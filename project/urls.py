from django.contrib import admin
from django.urls import path

from pages.views import live_page
from project import views

urlpatterns = [
    path("", live_page, name="live"),
    path("admin/", admin.site.urls),
    path("graphql/", views.GraphQLView.as_view(), name="graphql"),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("metrics", views.metrics_view, name="metrics"),
]
