# Thin wrapper over CMake. `make demo` and `make test` set up everything they
# need (scripts/deps.sh installs missing Debian packages when run as root).
BUILD      ?= build
TEST_BUILD ?= build-test
JOBS       ?= $(shell nproc)

.PHONY: all deps build demo test bench model fuzz fuzz-snapshot fuzz-serve clean

all: build

deps:
	@scripts/deps.sh

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

DEMO_MODEL ?= models/driftwood-kjv-q8_0.gguf
DEMO_PROMPT ?= Write a haiku about driftwood.

demo: build
	$(BUILD)/driftwood run $(BUILD)/examples/matmul.wasm
	@echo "--- chat example on $(DEMO_MODEL) (15.7 M parameters trained on the King James Bible: models/README.md)"
	$(BUILD)/driftwood run --model default=$(DEMO_MODEL) $(BUILD)/examples/chat.wasm --seed 1 -n 48 "$(DEMO_PROMPT)"

test: deps
	@cmake -S . -B $(TEST_BUILD) -DCMAKE_BUILD_TYPE=Debug -DDW_SANITIZE=ON >/dev/null
	@cmake --build $(TEST_BUILD) -j $(JOBS)
	cd $(TEST_BUILD) && ctest --output-on-failure

# Retrains the default model (tools/train/run.sh: KJV corpus, BPE vocabulary,
# PyTorch training on CUDA when present, GGUF export, held-out perplexity)
# into build/train/; copy the .gguf to models/ to make it the default.
model:
	tools/train/run.sh build/train

FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 300
# libFuzzer on the model-file path (GGUF parser, model checks, tokenizer,
# a tiny decode) under ASan + UBSan; new inputs go to $(FUZZ_BUILD)/corpus.
fuzz: deps
	@CC=clang cmake -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDW_FUZZ=ON -DDRIFTWOOD_CUDA=OFF >/dev/null
	@cmake --build $(FUZZ_BUILD) -j $(JOBS) --target gguf_fuzz
	@mkdir -p $(FUZZ_BUILD)/corpus
	ASAN_OPTIONS=allow_user_segv_handler=1:detect_leaks=1 $(FUZZ_BUILD)/gguf_fuzz -max_total_time=$(FUZZ_SECONDS) \
	  -max_len=65536 -timeout=10 -rss_limit_mb=4096 $(FUZZ_BUILD)/corpus tests/fuzz/seeds

# Thawing snapshots (container, checksums, zstd, every section decoder).
fuzz-snapshot: deps build
	@CC=clang cmake -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDW_FUZZ=ON -DDRIFTWOOD_CUDA=OFF >/dev/null
	@cmake --build $(FUZZ_BUILD) -j $(JOBS) --target snapshot_fuzz
	@mkdir -p $(FUZZ_BUILD)/snap-corpus $(FUZZ_BUILD)/snap-seeds
	$(BUILD)/driftwood actor spawn --module $(BUILD)/tests/guests/echo_actor.wasm --model default=models/demo-tiny-q8_0.gguf \
	  --state $(FUZZ_BUILD)/snap-seeds/a.dws --no-embed-module
	$(BUILD)/driftwood actor send --state $(FUZZ_BUILD)/snap-seeds/a.dws --module $(BUILD)/tests/guests/echo_actor.wasm \
	  'llm hello world' x >/dev/null
	DW_FUZZ_MODULE=$(BUILD)/tests/guests/echo_actor.wasm DW_FUZZ_MODEL=models/demo-tiny-q8_0.gguf \
	  DW_FUZZ_SNAPSHOT=$(FUZZ_BUILD)/snap-seeds/a.dws \
	  ASAN_OPTIONS=allow_user_segv_handler=1:detect_leaks=1 $(FUZZ_BUILD)/snapshot_fuzz -max_total_time=$(FUZZ_SECONDS) \
	  -max_len=1048576 -timeout=20 -rss_limit_mb=4096 $(FUZZ_BUILD)/snap-corpus $(FUZZ_BUILD)/snap-seeds

# The HTTP server: each input is one raw connection (HTTP parsing, routing,
# JSON bodies, actor messages, snapshot uploads) to a server on loopback.
fuzz-serve: deps build
	@CC=clang cmake -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDW_FUZZ=ON -DDRIFTWOOD_CUDA=OFF >/dev/null
	@cmake --build $(FUZZ_BUILD) -j $(JOBS) --target serve_fuzz
	@mkdir -p $(FUZZ_BUILD)/serve-corpus $(FUZZ_BUILD)/serve-seeds
	$(BUILD)/driftwood actor spawn --module $(BUILD)/tests/guests/echo_actor.wasm --model default=models/demo-tiny-q8_0.gguf \
	  --state $(FUZZ_BUILD)/serve-seeds/a.dws
	{ printf 'POST /v1/actors?id=up HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\nConnection: close\r\n\r\n' \
	  $$(stat -c %s $(FUZZ_BUILD)/serve-seeds/a.dws); cat $(FUZZ_BUILD)/serve-seeds/a.dws; } > $(FUZZ_BUILD)/serve-seeds/upload.http
	rm $(FUZZ_BUILD)/serve-seeds/a.dws
	DW_FUZZ_MODULE=$(BUILD)/tests/guests/echo_actor.wasm DW_FUZZ_MODEL=models/demo-tiny-q8_0.gguf \
	  ASAN_OPTIONS=allow_user_segv_handler=1:detect_leaks=0 $(FUZZ_BUILD)/serve_fuzz -max_total_time=$(FUZZ_SECONDS) \
	  -max_len=65536 -timeout=30 -rss_limit_mb=4096 -detect_leaks=0 -artifact_prefix=$(FUZZ_BUILD)/ $(FUZZ_BUILD)/serve-corpus \
	  $(FUZZ_BUILD)/serve-seeds tests/fuzz/serve-seeds

bench: build
	bench/run.sh $(BUILD)

clean:
	rm -rf $(BUILD) $(TEST_BUILD) $(FUZZ_BUILD)
