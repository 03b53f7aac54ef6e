package guest

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func fakeRoot(t *testing.T) string {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	os.WriteFile(filepath.Join(root, "etc/passwd"), []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\napp:x:1000:1000::/home/app:/bin/sh\n"), 0o644)
	os.WriteFile(filepath.Join(root, "etc/group"), []byte("root:x:0:\nnogroup:x:65534:\napp:x:1000:\nwheel:x:10:app,other\ndocker:x:998:app\n"), 0o644)
	return root
}

func TestLookupUser(t *testing.T) {
	root := fakeRoot(t)
	for spec, want := range map[string]struct {
		uid, gid uint32
		groups   []uint32
		home     string
	}{
		"nobody":       {65534, 65534, []uint32{}, "/nonexistent"},
		"app":          {1000, 1000, []uint32{10, 998}, "/home/app"},
		"1000":         {1000, 1000, []uint32{10, 998}, "/home/app"},
		"app:wheel":    {1000, 10, []uint32{998}, "/home/app"},
		"4242":         {4242, 4242, []uint32{}, "/"},
		"4242:nogroup": {4242, 65534, []uint32{}, "/"},
	} {
		u, err := LookupUser(root, spec)
		if err != nil {
			t.Fatalf("%s: %v", spec, err)
		}
		if u.Cred.Uid != want.uid || u.Cred.Gid != want.gid || !reflect.DeepEqual(u.Cred.Groups, want.groups) || u.Home != want.home {
			t.Errorf("%s: got %+v home %s", spec, u.Cred, u.Home)
		}
	}
	for spec, msg := range map[string]string{"ghost": "no such user", "app:ghosts": "no such group", ":1": "NAME|UID", "app:": "NAME|UID"} {
		if _, err := LookupUser(root, spec); err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("%s: got %v, want %q", spec, err, msg)
		}
	}
}
