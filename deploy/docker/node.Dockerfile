FROM rust:1.88-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p ruvdllm-node

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 ruvdllm && mkdir -p /var/lib/ruvdllm && chown ruvdllm /var/lib/ruvdllm
COPY --from=build /src/target/release/node /usr/local/bin/node
USER ruvdllm
ENTRYPOINT ["node"]
CMD ["run", "--config", "/etc/ruvdllm/node.toml"]
