from django.contrib import admin
from django.urls import path

from project import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("graphql/", views.GraphQLView.as_view(), name="graphql"),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
]
