# QB application image (docker-compose.dev.yml: web, and engines once they exist).
# PostgreSQL and Redis are separate containers, so requirements/embedded.txt is not installed.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first: this layer is rebuilt only when the pins change.
COPY requirements/base.txt requirements/base.txt
RUN pip install -r requirements/base.txt

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin qb
COPY --chown=qb:qb . .
USER qb

EXPOSE 8000
CMD ["python", "-m", "qbsite.launcher", "run", "--host", "0.0.0.0", "--port", "8000"]
