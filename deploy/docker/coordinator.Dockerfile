# Coordinator image: a light build without the model (`--no-default-features`).
FROM rust:1.88-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p ruvdllm-coordinator --no-default-features

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 ruvdllm && mkdir -p /var/lib/ruvdllm && chown ruvdllm /var/lib/ruvdllm
COPY --from=build /src/target/release/coordinator /usr/local/bin/coordinator
USER ruvdllm
EXPOSE 7443 9464
ENTRYPOINT ["coordinator"]
CMD ["run", "--config", "/etc/ruvdllm/coordinator.toml"]
