# The default tool image of the container runner (FLOWFED_CONTAINER_IMAGE=flowfed-runtime:latest):
# Python with flowfed installed, running `python -m flowfed.runtime` as the caller's uid.
#   docker build -t flowfed-runtime:latest -f docker/runtime.Dockerfile .
FROM python:3.12-slim
COPY pyproject.toml README.md /src/
COPY src /src/src
RUN pip install --no-cache-dir /src && rm -rf /src
ENTRYPOINT []
