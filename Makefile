# mgsip developer entry points. `make test` is what CI runs (.ci/run).
GO        ?= go
BIN       ?= bin/mgsip
FUZZTIME  ?= 5m
PKGS      := ./...
NFPM      ?= $(GO) run github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2

# What the binary says it is (mgsip version, mgsip_build_info). A tag
# v1.2.3 on HEAD gives 1.2.3; otherwise 0.0.0+git.<commit> (0.0.0+unknown
# without git, e.g. a container build whose context has no .git). The date is the
# commit's, so that two builds of one commit are the same bytes.
REVISION   ?= $(shell git rev-parse HEAD 2>/dev/null)$(shell git diff --quiet HEAD 2>/dev/null || echo -dirty)
SHORT_REV  := $(shell git rev-parse --short=12 HEAD 2>/dev/null)
VERSION    ?= $(or $(patsubst v%,%,$(shell git describe --tags --exact-match --match 'v[0-9]*' 2>/dev/null)),$(if $(SHORT_REV),0.0.0+git.$(SHORT_REV),0.0.0+unknown))
BUILD_DATE ?= $(shell git log -1 --format=%cI 2>/dev/null)
ARCH       ?= $(shell $(GO) env GOARCH)
BI         := github.com/mgsip/mgsip/internal/buildinfo
LDFLAGS    := -s -w -X $(BI).version=$(VERSION) -X $(BI).revision=$(REVISION) -X $(BI).date=$(BUILD_DATE)


.PHONY: all build deb package-test test test-deps lint vet staticcheck fmt-check unit licenses bench bench-calls bench-calls-inproc soak fuzz explore demo clean

all: build

# A static binary (no cgo: the same file runs on any Linux of its arch).
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/mgsip

# The Debian package, bin/mgsip_$(VERSION)_$(ARCH).deb, built by nfpm from
# configs/deb/nfpm.yaml (user, /etc/mgsip, unit, docs; docs/operations.md).
deb: build
	VERSION='$(VERSION)' ARCH='$(ARCH)' $(NFPM) package --config configs/deb/nfpm.yaml --packager deb --target bin/

# Builds the .deb, installs it with dpkg, proves check-config and a short
# run as the mgsip user, purges it; then the manual install path of
# docs/operations.md the same way (.ci/package-test; root only).
package-test:
	bash .ci/package-test

# Every test: formatting, vet, staticcheck, unit and race tests, fuzz corpus
# replay, and the interop tests against real programs (osmo-mgw, tshark),
# which must run here: MGSIP_REQUIRE_INTEROP=1 turns a missing program into
# a failure instead of a skip. Then the package test (root only; skipped
# elsewhere unless CI=true).
test: test-deps lint
	MGSIP_REQUIRE_INTEROP=1 $(GO) test -race -count=1 -timeout 20m $(PKGS)
	bash .ci/package-test

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

# Every dependency has a recognised license compatible with Apache-2.0 and
# its row in docs/licenses.md (also part of `make test`).
licenses:
	$(GO) test -count=1 -run '^TestDependencies$$' ./internal/licensecheck/

# Benchmarks (figures go to docs/benchmarks.md); the call load run is
# bench-calls.
bench:
	$(GO) test -run '^$$' -bench . -skip '^Benchmark(CallLoad|CallsRealPath|IdleLines)$$' -benchmem -count=1 $(PKGS)

# Call load on the real path: three processes on loopback - `mgsip run`
# with a generated configuration, cmd/mgsip-loadgen as the gateway, and
# Kamailio as registrar (digest) and proxy; stepped rates
# (MGSIP_LOAD_LINES, MGSIP_LOAD_RATES, MGSIP_LOAD_STEP, MGSIP_LOAD_TALK;
# MGSIP_LOAD_STORM=1 the cold storm, MGSIP_LOAD_PROFILE=dir mgsip's
# profiles; see cmd/mgsip-loadgen/realpath_test.go).
bench-calls:
	$(GO) test -run '^$$' -bench '^BenchmarkCallsRealPath$$' -benchtime 1x -timeout 30m -v ./cmd/mgsip-loadgen/

# The earlier in-process call load: fake gateway, mgsip and the siptest
# PBX in one process (bridge/bench_test.go).
bench-calls-inproc:
	$(GO) test -run '^$$' -bench '^BenchmarkCallLoad$$' -benchtime 1x -timeout 30m -v ./bridge/

# The cluster soak (not in `make test`): three `mgsip run` processes on a
# real etcd and Kamailio, 200 simulated gateways x 10 lines, calls at a
# steady rate while the nodes are killed (SIGKILL) and restarted in turn;
# logs takeover p50/p99 and call outcomes (internal/clustertest/soak_test.go;
# MGSIP_SOAK_GATEWAYS, _LINES, _RATE, _DURATION, _TALK, _KILL_EVERY, _DOWN,
# _TTL tune it). Figures go to docs/benchmarks.md.
soak: test-deps
	MGSIP_SOAK=1 MGSIP_REQUIRE_INTEROP=1 $(GO) test -count=1 -run '^TestSoak$$' -timeout 60m -v ./internal/clustertest/

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
	cd internal/config && $(GO) test -run '^$$' -fuzz '^FuzzLoadConfig$$' -fuzztime $(FUZZTIME) .
	cd internal/chanmgcp && $(GO) test -run '^$$' -fuzz '^FuzzImport$$' -fuzztime $(FUZZTIME) .
	cd internal/trace && for t in FuzzHEPRoundTrip FuzzLadder FuzzTraceFilter; do \
		$(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) . || exit 1; \
	done
	cd sip && $(GO) test -run '^$$' -fuzz '^FuzzStack$$' -fuzztime $(FUZZTIME) .

# The main job on its built-in default: a real call between the two lines
# of a simulated gateway through SIP and a PBX stand-in (configs/demo.yaml).
demo:
	$(GO) run ./cmd/mgsip demo

clean:
	rm -rf bin

# make print-VERSION: the value of a variable (used by .ci/package-test).
print-%:
	@echo '$($*)'

