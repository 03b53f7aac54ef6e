package busyboximage

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func TestWrite(t *testing.T) {
	if _, err := os.Stat(Busybox); err != nil {
		t.Skip("no busybox-static on this host")
	}
	path := filepath.Join(t.TempDir(), "images.tar")
	refs := map[string]string{"example.com/bb:root": "", "example.com/bb:user": "user"}
	if err := Write(path, refs); err != nil {
		t.Fatal(err)
	}
	for ref, user := range refs {
		tag, _ := name.NewTag(ref)
		img, err := tarball.ImageFromPath(path, &tag)
		if err != nil {
			t.Fatalf("%s: %v", ref, err)
		}
		cf, err := img.ConfigFile()
		if err != nil || cf.Config.User != user || len(cf.RootFS.DiffIDs) != 1 {
			t.Fatalf("%s: config %+v, %v", ref, cf, err)
		}
	}
}
