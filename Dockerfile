# sandbox-fleet's own service image: the API, the workers, beat, Flower and Redis, one image whose
# entrypoint picks the role (`sandbox-fleet api|worker|beat|flower|redis`; see deploy/entrypoint.py).
#
# Built with no registry reachable: `deploy/build-image` makes the Debian rootfs
# sandbox-fleet/rootfs:bookworm (images/rootfs/build-rootfs.sh), fetches on the host the .debs
# (redis-server, iptables) and the wheels (the project with its `flower` extra) into
# .cache/compose/, then runs `docker build`. RUN steps need no network. docker-compose.yml builds
# this same file, so run deploy/build-image once before `docker compose up --build`.
ARG BASE_IMAGE=sandbox-fleet/rootfs:bookworm

# Stage 1: the Python packages, installed into /staging so no wheel reaches a final layer.
FROM ${BASE_IMAGE} AS python-packages
COPY .cache/compose/wheels/ /wheels/
RUN set -eu; \
    if ! ls /wheels/pip-*.whl >/dev/null 2>&1; then \
        echo "no wheels in .cache/compose/wheels: run deploy/build-image first" >&2; exit 1; fi; \
    pip_wheel="$(ls /wheels/pip-*.whl)"; \
    python3 "$pip_wheel/pip" install --no-index --find-links=/wheels --root=/staging \
        --break-system-packages --no-warn-script-location --disable-pip-version-check \
        /wheels/*.whl
COPY .cache/compose/project/ /project/
RUN set -eu; \
    python3 "$(ls /wheels/pip-*.whl)/pip" install --no-index --find-links=/wheels --no-deps \
        --root=/staging --break-system-packages --no-warn-script-location \
        --disable-pip-version-check /project/sandbox_fleet-*.whl

# Stage 2: the image.
FROM ${BASE_IMAGE}
COPY .cache/compose/debs/ /tmp/debs/
RUN set -eu; \
    ls /tmp/debs/*.deb >/dev/null; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        -o Dpkg::Use-Pty=0 /tmp/debs/*.deb >/dev/null; \
    rm -rf /tmp/debs /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/*; \
    redis-server --version
COPY --from=python-packages /staging/usr/local/ /usr/local/
COPY deploy/entrypoint.py /usr/local/bin/sandbox-fleet
RUN set -eu; \
    chmod 755 /usr/local/bin/sandbox-fleet; \
    python3 -c "import sandbox_api, sandbox_workers, backends, flower; print('sandbox-fleet image ok')"
ENV PYTHONUNBUFFERED=1 \
    LANG=C.UTF-8 \
    HOST=0.0.0.0
WORKDIR /app
EXPOSE 8000 5555 6379
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/sandbox-fleet"]
CMD ["api"]
