# mgsip developer entry points. `make test` is what CI runs (.ci/run).
GO        ?= go
BIN       ?= bin/mgsip
FUZZTIME  ?= 5m
PKGS      := ./...

.PHONY: all build test test-deps lint vet staticcheck fmt-check unit bench bench-calls bench-calls-inproc fuzz explore demo clean

all: build

build:
	$(GO) build -trimpath -o $(BIN) ./cmd/mgsip

# Every test: formatting, vet, staticcheck, unit and race tests, fuzz corpus
# replay, and the interop tests against real programs (osmo-mgw, tshark),
# which must run here: MGSIP_REQUIRE_INTEROP=1 turns a missing program into
# a failure instead of a skip.
test: test-deps lint
	MGSIP_REQUIRE_INTEROP=1 $(GO) test -race -count=1 -timeout 20m $(PKGS)

# Installs the programs the interop tests need (Debian packages) if absent.
test-deps:
	@bash .ci/deps

lint: fmt-check vet staticcheck

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet $(PKGS)

staticcheck:
	$(GO) tool staticcheck $(PKGS)

unit:
	$(GO) test -count=1 $(PKGS)

# Benchmarks (figures go to docs/benchmarks.md); the call load run is
# bench-calls.
bench:
	$(GO) test -run '^$$' -bench . -skip '^Benchmark(CallLoad|CallsRealPath|IdleLines)$$' -benchmem -count=1 $(PKGS)

# Call load on the real path: three processes on loopback - `mgsip run`
# with a generated configuration, cmd/mgsip-loadgen as the gateway, and
# Kamailio as registrar (digest) and proxy; stepped rates
# (MGSIP_LOAD_LINES, MGSIP_LOAD_RATES, MGSIP_LOAD_STEP, MGSIP_LOAD_TALK;
# see cmd/mgsip-loadgen/realpath_test.go).
bench-calls:
	$(GO) test -run '^$$' -bench '^BenchmarkCallsRealPath$$' -benchtime 1x -timeout 30m -v ./cmd/mgsip-loadgen/

# The earlier in-process call load: fake gateway, mgsip and the siptest
# PBX in one process (bridge/bench_test.go).
bench-calls-inproc:
	$(GO) test -run '^$$' -bench '^BenchmarkCallLoad$$' -benchtime 1x -timeout 30m -v ./bridge/

# Long exploration of the line state machine: random seeded sequences of
# user, far-end, gateway and operator actions until DURATION is up (`make
# test` replays a fixed budget of seeds). A failure prints the seed and a
# shrunk plan to replay (bridge/explore_test.go).
DURATION ?= 10m
explore:
	MGSIP_EXPLORE_DURATION=$(DURATION) $(GO) test -count=1 -run '^TestExplore$$' -timeout 0 -v ./bridge/ 2>&1 | grep -v '^    --- PASS'

# Long fuzzing: each target for FUZZTIME. New crashers land in
# testdata/fuzz/ and are replayed by `make test` from then on.
fuzz:
	cd mgcp && for t in FuzzParse FuzzDigitMap FuzzLocalConnectionOptions; do \
		$(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) . || exit 1; \
	done
	cd cmd/mgsip && for t in FuzzLoadConfig FuzzHEPRoundTrip; do \
		$(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) . || exit 1; \
	done
	cd sip && $(GO) test -run '^$$' -fuzz '^FuzzStack$$' -fuzztime $(FUZZTIME) .

# The main job on its built-in default: a real call between the two lines
# of a simulated gateway through SIP and a PBX stand-in (configs/demo.yaml).
demo:
	$(GO) run ./cmd/mgsip demo

clean:
	rm -rf bin
