PREFIX ?= /usr/local
GO ?= go

.PHONY: build install test clean

build:
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/firegopher-init ./cmd/firegopher-init
	$(GO) build -trimpath -o bin/firegopher ./cmd/firegopher

# firegopher looks for firegopher-init beside itself.
install: build
	install -D -m 0755 bin/firegopher $(DESTDIR)$(PREFIX)/bin/firegopher
	install -D -m 0755 bin/firegopher-init $(DESTDIR)$(PREFIX)/bin/firegopher-init

test:
	./scripts/test.sh

clean:
	rm -rf bin
