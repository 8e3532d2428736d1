# volchain: one image for every role (migrations, step workers, sweeper).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY models ./models
COPY tasks ./tasks
COPY workers ./workers
COPY cli ./cli
COPY bench ./bench
RUN pip install --no-cache-dir . && useradd --create-home --uid 10001 volchain
USER volchain
ENTRYPOINT ["volchain"]
