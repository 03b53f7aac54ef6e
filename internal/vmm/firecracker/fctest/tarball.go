package fctest

import (
	"archive/tar"
	"compress/gzip"
	"os"
	"path/filepath"
)

// Tarball writes a release tarball of version's doubles into dir, laid out as
// Firecracker's (release-vX-x86_64/firecracker-vX-x86_64 and jailer-vX-x86_64), for tests
// that install a release the way a user does. It returns the tarball's path.
func Tarball(dir, version string) (string, error) {
	rel, err := Build(version)
	if err != nil {
		return "", err
	}
	tgz := filepath.Join(dir, "firecracker-v"+version+"-x86_64.tgz")
	f, err := os.Create(tgz)
	if err != nil {
		return "", err
	}
	defer f.Close()
	gz, _ := gzip.NewWriterLevel(f, gzip.BestSpeed)
	tw := tar.NewWriter(gz)
	for _, role := range []struct{ name, src string }{{"firecracker", rel.Firecracker}, {"jailer", rel.Jailer}} {
		b, err := os.ReadFile(role.src)
		if err != nil {
			return "", err
		}
		name := "release-v" + version + "-x86_64/" + role.name + "-v" + version + "-x86_64"
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o755, Size: int64(len(b)), Typeflag: tar.TypeReg}); err != nil {
			return "", err
		}
		if _, err := tw.Write(b); err != nil {
			return "", err
		}
	}
	if err := tw.Close(); err != nil {
		return "", err
	}
	if err := gz.Close(); err != nil {
		return "", err
	}
	return tgz, f.Close()
}
