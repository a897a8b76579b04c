GO      ?= go
BIN     := bin/lifeboat
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)

.PHONY: all build deps test fmt-check vet unit fuzz demo clean

all: build

build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/lifeboat

deps:
	@scripts/deps.sh

# The test command: formatting, vet, and every test (real PostgreSQL and
# Redis included) under the race detector.
test: deps fmt-check vet
	$(GO) test -race -count=1 -timeout 20m ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt: these files need formatting:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

# Short fuzzing of the parsers; FUZZTIME=5m for longer.
FUZZTIME ?= 30s
fuzz:
	$(GO) test ./config -run '^$$' -fuzz FuzzParse -fuzztime $(FUZZTIME)
	$(GO) test ./redis -run '^$$' -fuzz FuzzParseInfo -fuzztime $(FUZZTIME)
	$(GO) test ./traffic/dnsserver -run '^$$' -fuzz FuzzAnswer -fuzztime $(FUZZTIME)
	$(GO) test ./llm -run '^$$' -fuzz FuzzCheckNumbers -fuzztime $(FUZZTIME)
	$(GO) test ./api -run '^$$' -fuzz FuzzRunRequest -fuzztime $(FUZZTIME)
	$(GO) test ./api -run '^$$' -fuzz FuzzApproveRequest -fuzztime $(FUZZTIME)
	$(GO) test ./api -run '^$$' -fuzz FuzzDrill -fuzztime $(FUZZTIME)

demo: deps build
	@scripts/demo.sh

clean:
	rm -rf bin
