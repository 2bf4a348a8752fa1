# monitor: the health-monitoring daemon. Build: docker build -t monitor .
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY monitor ./monitor
COPY checks ./checks
COPY alerts ./alerts
# A virtualenv copied whole into the final stage: no compiler or pip cache is left behind.
RUN python3 -m venv /opt/monitor \
    && /opt/monitor/bin/pip install --no-cache-dir --disable-pip-version-check .

FROM python:3.11-slim-bookworm
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/monitor --shell /usr/sbin/nologin monitor \
    && mkdir -p /etc/monitor /var/lib/monitor \
    && chown monitor:monitor /var/lib/monitor
COPY --from=build /opt/monitor /opt/monitor
COPY monitor.toml /etc/monitor/monitor.toml
ENV PATH=/opt/monitor/bin:$PATH \
    MONITOR_CONFIG=/etc/monitor/monitor.toml \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# The default state = "sqlite:///monitor-state.db" is relative to the working directory: the volume.
WORKDIR /var/lib/monitor
VOLUME ["/var/lib/monitor"]
USER 10001:10001
EXPOSE 9100
# GET /healthz on the monitor.listen of $MONITOR_CONFIG (a wildcard address on loopback), 4 s at
# most; the timeout leaves room for the interpreter's start on a busy host.
HEALTHCHECK --interval=15s --timeout=10s --start-period=10s --retries=3 \
    CMD ["monitor", "healthcheck"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["monitor"]
CMD ["run"]
