# volchain: one image for every role (migrations, API, step workers, scheduler, volume services, sweeper).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY models ./models
COPY tasks ./tasks
COPY workers ./workers
COPY cli ./cli
COPY api ./api
COPY drivers ./drivers
COPY bench ./bench
RUN pip install --no-cache-dir . && useradd --create-home --uid 10001 volchain \
    && mkdir -p /var/lib/volchain/volumes && chown volchain /var/lib/volchain/volumes
USER volchain
ENTRYPOINT ["volchain"]
