# The project's commands. `make test` is the one the README names and CI
# runs; it needs nothing but Go: modules come from the module proxy.
GO ?= go
FUZZTIME ?= 10s

.PHONY: test check unit fuzz bench run

# Every test: static checks, the unit, store-conformance and end-to-end
# suites, then a short run of each fuzz target.
test: check unit fuzz

check:
	$(GO) mod download
	@unformatted="$$(gofmt -l cmd internal migrations *.go)"; \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...

unit:
	$(GO) test -count=1 ./...

fuzz:
	$(GO) test -run='^$$' -fuzz='^FuzzDecodeCommand$$' -fuzztime=$(FUZZTIME) ./internal/api
	$(GO) test -run='^$$' -fuzz='^FuzzUpcastOrderCreated$$' -fuzztime=$(FUZZTIME) ./internal/aggregate

# The benchmarks whose figures are in the README.
bench:
	$(GO) test -run='^$$' -bench=. -benchtime=5s ./internal/store/sqlite ./internal/readmodel/sqlite ./cmd/orderd

run:
	$(GO) run ./cmd/orderd
