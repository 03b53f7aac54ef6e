PREFIX ?= /usr/local
GO ?= go

.PHONY: build install test clean

build:
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/firegopher-init ./cmd/firegopher-init
	$(GO) build -trimpath -o bin/firegopher ./cmd/firegopher
	$(GO) build -trimpath -o bin/containerd-shim-firegopher-v1 ./cmd/containerd-shim-firegopher-v1

# firegopher and the containerd shim look for firegopher-init beside themselves.
install: build
	install -D -m 0755 bin/firegopher $(DESTDIR)$(PREFIX)/bin/firegopher
	install -D -m 0755 bin/firegopher-init $(DESTDIR)$(PREFIX)/bin/firegopher-init
	install -D -m 0755 bin/containerd-shim-firegopher-v1 $(DESTDIR)$(PREFIX)/bin/containerd-shim-firegopher-v1

test:
	./scripts/test.sh

clean:
	rm -rf bin
