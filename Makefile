# Thin wrapper over CMake. `make demo` and `make test` set up everything they
# need (scripts/deps.sh installs missing Debian packages when run as root).
BUILD      ?= build
TEST_BUILD ?= build-test
JOBS       ?= $(shell nproc)

.PHONY: all deps build demo test bench fuzz clean

all: build

deps:
	@scripts/deps.sh

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

DEMO_MODEL ?= models/demo-tiny-q8_0.gguf
DEMO_PROMPT ?= Write a haiku about driftwood.

demo: build
	$(BUILD)/driftwood run $(BUILD)/examples/matmul.wasm
	@echo "--- chat example on $(DEMO_MODEL) (random weights: the text is gibberish by design)"
	$(BUILD)/driftwood run --model default=$(DEMO_MODEL) $(BUILD)/examples/chat.wasm --seed 1 -n 48 "$(DEMO_PROMPT)"

test: deps
	@cmake -S . -B $(TEST_BUILD) -DCMAKE_BUILD_TYPE=Debug -DDW_SANITIZE=ON >/dev/null
	@cmake --build $(TEST_BUILD) -j $(JOBS)
	cd $(TEST_BUILD) && ctest --output-on-failure

bench: build
	bench/run.sh $(BUILD)

clean:
	rm -rf $(BUILD) $(TEST_BUILD)
