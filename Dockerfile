# virtual-kubelet --provider nomad: a multi-stage build, a small runtime image, a non-root user.
#   docker build --build-arg VK_GIT_COMMIT=$(git rev-parse --short=12 HEAD) -t virtual-kubelet-nomad .
# Checked without a Docker engine by scripts/check-deploy.sh (BuildKit's parser and linter).

# The Rust of the lints and tests (Cargo.toml's rust-version is the floor). Its gcc and make build
# the C code in the dependency tree: ring, and jemalloc (the binary's allocator).
FROM rust:1.95-bookworm AS build
# The commit --version, kubeletVersion and vk_build_info name (.git is not in the context).
ARG VK_GIT_COMMIT=unknown
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p virtual-kubelet --bin virtual-kubelet \
    && cp target/release/virtual-kubelet /virtual-kubelet

# Distroless Debian 12 (the builder's glibc) with CA certificates and no shell, as uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /virtual-kubelet /usr/local/bin/virtual-kubelet
USER 65532:65532
EXPOSE 10250 10255
ENTRYPOINT ["/usr/local/bin/virtual-kubelet"]
CMD ["--provider", "nomad"]
