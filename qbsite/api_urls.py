"""/api/v1/: every app's API routes."""

from rest_framework.routers import DefaultRouter

router = DefaultRouter()

urlpatterns = router.urls
