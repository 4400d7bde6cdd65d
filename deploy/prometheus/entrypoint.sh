# The API's bearer token, from the environment, into the file prometheus.yml names (Prometheus
# reads no environment variables in its configuration). Empty: the API has no token either.
umask 077
printf '%s' "${BEARER_TOKEN:-}" > /prometheus/.bearer-token
exec /usr/bin/prometheus --config.file=/etc/prometheus/prometheus.yml \
    --storage.tsdb.path=/prometheus --storage.tsdb.retention.time="${PROMETHEUS_RETENTION:-15d}" \
    --web.listen-address="${PROMETHEUS_LISTEN:-:9090}" "$@"
