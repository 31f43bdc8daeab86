from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from mailplane.api import errors, monitoring

urlpatterns = [
    path("", include("mailplane.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
    path("admin/", admin.site.urls),
    # Prometheus' conventional path, outside /api/: operators scrape it, accounts do not.
    path("metrics", monitoring.metrics_view, name="metrics"),
]

handler400 = errors.bad_request_view
handler404 = errors.not_found_view
handler500 = errors.server_error_view
