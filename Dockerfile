# virtual-kubelet --provider nomad: a multi-stage build, a small runtime image, a non-root user.
#   docker build -t virtual-kubelet-nomad .
FROM rust:1.95-bookworm AS build
WORKDIR /src
# cmake and clang build aws-lc-rs (rcgen's default crypto backend).
RUN apt-get update && apt-get install -y --no-install-recommends cmake clang && rm -rf /var/lib/apt/lists/*
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p vk-app --bin virtual-kubelet \
    && cp target/release/virtual-kubelet /virtual-kubelet

# Distroless with glibc and CA certificates, running as uid 65532 ("nonroot").
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /virtual-kubelet /usr/local/bin/virtual-kubelet
USER 65532:65532
EXPOSE 10250 10255
ENTRYPOINT ["/usr/local/bin/virtual-kubelet"]
CMD ["--provider", "nomad"]
